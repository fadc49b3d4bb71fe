"""Prometheus metrics of one server: the only module that talks to prometheus-client.

Names follow vLLM's metric set with the prefix `adaptive_sarathi:` (so vLLM dashboards carry over
by renaming), plus per-iteration metrics of the Sarathi scheduler: iteration duration, prefill
and decode tokens per iteration, and the token budget and chunk size in force. Every metric has
the label model_name; the per-request latency histograms (TTFT, queue time, inter-token latency,
end-to-end latency) also the label slo_class: the request's SLO class, "" for none (the policy's
top-level targets). Its values are fixed when the metrics are built (the policy's classes), so
its cardinality is bounded (a policy changed at run time adds its classes' series). The info
metric slo_policy_info{name} is 1 for the SLO policy in force (absent without one). TTFT, queue time and inter-token latency are observed as tokens come out;
end-to-end latency and the per-request token histograms when a request finishes on its own
(stop or length): aborted requests count only in request_success_total{finished_reason="abort"}.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from adaptive_sarathi.engine.outputs import RequestOutput
from adaptive_sarathi.engine.request import FinishReason
from adaptive_sarathi.engine.stats import EngineState, StepStats

PREFIX = "adaptive_sarathi:"

# Fine below a second so that SLOs of 10 ms and up fall on bucket edges.
_TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75,
                 1.0, 1.5, 2.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0)
_GAP_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.06, 0.075,
                0.1, 0.125, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0)
_E2E_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0,
                120.0, 240.0, 480.0, 960.0, 1920.0)
_REJECTION_REASONS = {400: "bad_request", 401: "unauthorized", 404: "not_found", 405: "method_not_allowed",
                      413: "too_large", 429: "queue_full", 503: "unavailable"}
_TOKEN_BUCKETS = tuple(float(2 ** k) for k in range(18))  # 1 .. 131072 tokens


class _ClassLatency(NamedTuple):
    """The per-request latency histograms of one SLO class (prometheus-client children)."""

    ttft: Histogram
    inter_token: Histogram
    e2e: Histogram
    queue_time: Histogram


class ServerMetrics:
    """The metrics of one server in a private CollectorRegistry (so several servers can share a
    process). Fed plain stats objects through the EngineObserver methods, which the engine thread
    calls; prometheus-client makes them safe to scrape from the event loop meanwhile.

    slo_classes: the class names requests may carry (the SLO policy's); each gets its series of
    the per-request latency histograms up front, beside the "" series of requests without one.
    slo_policy: the name of the SLO policy in force, or None.
    """

    def __init__(self, model_name: str, slo_classes: Sequence[str] = (), slo_policy: str | None = None):
        self.registry = CollectorRegistry(auto_describe=True)
        self._model_name = model_name
        labels = {"model_name": model_name}

        def make(kind, name: str, doc: str, **kwargs):
            extra = kwargs.pop("labelnames", ())
            metric = kind(PREFIX + name, doc, labelnames=("model_name", *extra), registry=self.registry, **kwargs)
            return metric if extra else metric.labels(**labels)

        self.num_requests_running = make(Gauge, "num_requests_running", "Requests in the running batch")
        self.num_requests_waiting = make(Gauge, "num_requests_waiting", "Requests waiting to be admitted")
        self.kv_cache_usage = make(Gauge, "kv_cache_usage_perc", "Fraction of KV cache blocks in use (0-1)")
        self.token_budget = make(Gauge, "token_budget_tokens", "Token budget of the latest iteration")
        self.max_chunk = make(Gauge, "max_chunk_tokens", "Most prompt tokens per request in the latest iteration")
        self.prompt_tokens = make(Counter, "prompt_tokens", "Prompt tokens of requests whose prefill completed")
        self.generation_tokens = make(Counter, "generation_tokens", "Output tokens generated")
        self.num_preemptions = make(Counter, "num_preemptions", "Requests preempted (to be recomputed)")
        self.num_relegations = make(Counter, "num_relegations", "Requests served after the others because their TTFT "
                                    "deadline had passed (SLO relegation)")
        self._request_success = make(Counter, "request_success", "Finished requests by finish reason",
                                     labelnames=("finished_reason",))
        self._request_rejected = make(Counter, "request_rejected", "Requests refused before reaching the engine, "
                                      "by reason (queue_full and ttft_unreachable: 429, bad_request: 400, "
                                      "too_large: 413, ...)",
                                      labelnames=("reason",))
        self._rejected = {status: self._request_rejected.labels(model_name=model_name, reason=reason)
                          for status, reason in _REJECTION_REASONS.items()}
        self._rejected_other = self._request_rejected.labels(model_name=model_name, reason="other")
        self._ttft_unreachable = self._request_rejected.labels(model_name=model_name, reason="ttft_unreachable")
        self._success = {reason: self._request_success.labels(model_name=model_name, finished_reason=reason.value)
                         for reason in FinishReason}
        by_class = ("slo_class",)
        ttft = make(Histogram, "time_to_first_token_seconds", "Arrival to first output token",
                    buckets=_TTFT_BUCKETS, labelnames=by_class)
        inter_token = make(Histogram, "inter_token_latency_seconds",
                           "Gap between consecutive output tokens of a request", buckets=_GAP_BUCKETS,
                           labelnames=by_class)
        e2e = make(Histogram, "e2e_request_latency_seconds", "Arrival to last output token",
                   buckets=_E2E_BUCKETS, labelnames=by_class)
        queue_time = make(Histogram, "request_queue_time_seconds", "Arrival to first scheduled",
                          buckets=_TTFT_BUCKETS, labelnames=by_class)
        self._latency_families = (ttft, inter_token, e2e, queue_time)
        self._latency: dict[str, _ClassLatency] = {}
        self._add_classes(("", *slo_classes))
        self._slo_policy_info = make(Gauge, "slo_policy_info", "1 for the SLO policy in force, by its name",
                                     labelnames=("name",))
        self._slo_policy: str | None = None
        self.set_slo_policy(slo_policy, ())
        self.request_prompt_tokens = make(Histogram, "request_prompt_tokens", "Prompt tokens per finished request",
                                          buckets=_TOKEN_BUCKETS)
        self.request_generation_tokens = make(Histogram, "request_generation_tokens",
                                              "Output tokens per finished request", buckets=_TOKEN_BUCKETS)
        self.iteration_duration = make(Histogram, "iteration_duration_seconds", "Duration of one engine iteration",
                                       buckets=_GAP_BUCKETS)
        self.iteration_prefill_tokens = make(Histogram, "iteration_prefill_tokens",
                                             "Prompt tokens processed per iteration", buckets=(0.0, *_TOKEN_BUCKETS))
        self.iteration_decode_tokens = make(Histogram, "iteration_decode_tokens",
                                            "Decode tokens processed per iteration", buckets=(0.0, *_TOKEN_BUCKETS))
        # vLLM's names and units: tokens of admitted requests looked up, and those found cached.
        self.prefix_cache_queries = make(Counter, "prefix_cache_queries",
                                         "Tokens of admitted requests looked up in the prefix cache")
        self.prefix_cache_hits = make(Counter, "prefix_cache_hits",
                                      "Tokens of admitted requests found in the prefix cache (not computed)")

    def set_slo_policy(self, name: str | None, slo_classes: Sequence[str]) -> None:
        """Name the SLO policy now in force (None: none) in slo_policy_info, removing the old
        name's series, and give its classes their latency series (those of earlier policies stay)."""
        self._add_classes(slo_classes)
        if self._slo_policy is not None and self._slo_policy != name:
            self._slo_policy_info.remove(self._model_name, self._slo_policy)
        if name is not None:
            self._slo_policy_info.labels(model_name=self._model_name, name=name).set(1)
        self._slo_policy = name

    def _add_classes(self, names: Sequence[str]) -> None:
        # A new dict, swapped in whole: the engine thread reads it while the event loop updates it.
        latency = dict(self._latency)
        for name in names:
            if name not in latency:
                latency[name] = _ClassLatency(*(h.labels(model_name=self._model_name, slo_class=name)
                                                for h in self._latency_families))
        self._latency = latency

    # -- EngineObserver --------------------------------------------------------------------------

    def observe_step(self, stats: StepStats) -> None:
        self.iteration_duration.observe(stats.duration_s)
        self.iteration_prefill_tokens.observe(stats.num_prefill_tokens)
        self.iteration_decode_tokens.observe(stats.num_decode_tokens)
        self.token_budget.set(stats.token_budget)
        self.max_chunk.set(stats.max_chunk)
        if stats.num_preempted:
            self.num_preemptions.inc(stats.num_preempted)
        if stats.num_relegated:
            self.num_relegations.inc(stats.num_relegated)
        if stats.num_cache_query_tokens:
            self.prefix_cache_queries.inc(stats.num_cache_query_tokens)
            self.prefix_cache_hits.inc(stats.num_cached_tokens)
        self._set_queue(stats.num_waiting, stats.num_running, stats.num_free_blocks, stats.num_total_blocks)

    def observe_state(self, state: EngineState) -> None:
        self._set_queue(state.num_waiting, state.num_running, state.num_free_blocks, state.num_total_blocks)

    def _latency_of(self, slo_class: str | None) -> "_ClassLatency":
        """The per-request latency histograms of `slo_class` (None: those of requests without a
        class). A name not given at construction shares the "" series: the label never takes a
        value outside the policy's classes."""
        return self._latency.get(slo_class or "", self._latency[""])

    def observe_output(self, output: RequestOutput) -> None:
        timeline = output.timeline
        latency = self._latency_of(output.slo_class)
        new = len(output.new_token_ids)
        if new:
            self.generation_tokens.inc(new)
            times = timeline.token_times
            for i in range(max(1, len(times) - new), len(times)):
                latency.inter_token.observe(times[i] - times[i - 1])
        if new and len(output.token_ids) == new:  # the request's first tokens: its prefill is done
            self.prompt_tokens.inc(len(output.prompt_token_ids))
            latency.ttft.observe(timeline.ttft)
            latency.queue_time.observe(timeline.scheduling_delay)
        if output.finished:
            self._success[output.finish_reason].inc()
            if output.finish_reason is not FinishReason.ABORT:
                latency.e2e.observe(timeline.finished_time - timeline.arrival_time)
                self.request_prompt_tokens.observe(len(output.prompt_token_ids))
                self.request_generation_tokens.observe(len(output.token_ids))

    def observe_rejection(self, status: int, code: str | None = None) -> None:
        """A request answered with an error status (4xx, 503) before or instead of generating;
        `code` "ttft_unreachable" (a 429 of SLO admission) is counted apart from a full queue."""
        counter = self._ttft_unreachable if code == "ttft_unreachable" else self._rejected.get(status)
        (counter or self._rejected_other).inc()

    # -- exposition ------------------------------------------------------------------------------

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text exposition and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def _set_queue(self, num_waiting: int, num_running: int, num_free_blocks: int, num_total_blocks: int) -> None:
        self.num_requests_waiting.set(num_waiting)
        self.num_requests_running.set(num_running)
        self.kv_cache_usage.set(1.0 - num_free_blocks / num_total_blocks if num_total_blocks else 0.0)
