"""ServerMetrics: the Prometheus metrics of one server (docs/observability.md lists them all).

Names follow vLLM's metric set with the prefix `adaptive_sarathi:` (so vLLM dashboards carry over
by renaming), plus the Sarathi scheduler's and the budget controller's per-iteration telemetry.
Every prefixed metric has the labels model_name and engine (the engine's index in the server,
"0": one engine per server); the per-request latency histograms and the SLO attainment counters
also slo_class: the request's SLO class, "" for none (the policy's top-level targets). Its values
are fixed when the metrics are built (the policy's classes), so its cardinality is bounded (a
policy changed at run time adds its classes' series). TTFT, queue time and inter-token latency are
observed as tokens come out; end-to-end latency, the per-request token histograms and the
prefill/decode/inference times when a request finishes on its own (stop or length): aborted
requests count only in request_success_total{finished_reason="abort"}. The process's own metrics
(process_*, python_*) are collected into the same private registry.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, GCCollector, Gauge,
                               Histogram, PlatformCollector, ProcessCollector, generate_latest)

from adaptive_sarathi.engine.budget import FALLBACK_REASONS
from adaptive_sarathi.engine.outputs import RequestOutput
from adaptive_sarathi.engine.request import FinishReason
from adaptive_sarathi.engine.slo_targets import SloTargets
from adaptive_sarathi.engine.stats import EngineState, StepStats
from adaptive_sarathi.metrics import buckets
from adaptive_sarathi.metrics.model_error import LatencyModelCollector

PREFIX = "adaptive_sarathi:"

_REJECTION_REASONS = {400: "bad_request", 401: "unauthorized", 404: "not_found", 405: "method_not_allowed",
                      413: "too_large", 429: "queue_full", 503: "unavailable"}
_MAX_REASONS = 32  # distinct decision reasons given their own series; later ones share "other"


class _ClassSeries(NamedTuple):
    """The per-request series of one SLO class (prometheus-client children) and its targets in
    seconds (inf: none declared, so nothing is counted towards attainment)."""

    ttft: Histogram
    inter_token: Histogram
    e2e: Histogram
    queue_time: Histogram
    gaps: Counter
    gaps_within: Counter
    first_tokens: Counter
    first_tokens_within: Counter
    ttft_target_s: float
    tbt_target_s: float


def slo_fields(slo) -> dict:
    """The keyword arguments of ServerMetrics and set_slo_policy that describe the SLO policy
    `slo` (a controller.slo.SLOPolicy, or None for none)."""
    if slo is None:
        return {"name": None, "slo_classes": (), "targets": None, "budget_bounds": None}
    return {"name": slo.name, "slo_classes": slo.class_names, "targets": slo.as_targets(),
            "budget_bounds": (slo.bounds.min_token_budget, slo.bounds.max_token_budget)}


class ServerMetrics:
    """The metrics of one server in a private CollectorRegistry (so several servers can share a
    process). Fed plain stats objects through the EngineObserver methods, which the engine thread
    calls; prometheus-client makes them safe to scrape from the event loop meanwhile.

    slo_classes: the class names requests may carry (the SLO policy's); each gets its series of
    the per-request histograms up front, beside the "" series of requests without one.
    name: the name of the SLO policy in force, or None. targets: its targets (attainment is
    counted against them, and they are bucket edges of the latency histograms); None: no
    attainment counted. budget_bounds: its (min, max) token budget. Targets and bounds are also
    exported as gauges (slo_target_seconds, slo_budget_bound_tokens). budget_policy: the engine's BudgetPolicy, named in controller_info and
    whose latency_model_error() is exported on each scrape; None: neither.
    """

    def __init__(self, model_name: str, slo_classes: Sequence[str] = (), name: str | None = None,
                 targets: SloTargets | None = None, budget_bounds: tuple[int, int] | None = None,
                 budget_policy=None, engine_index: int = 0):
        self.registry = registry = CollectorRegistry(auto_describe=True)
        self._model_name = model_name
        self._engine = engine = str(engine_index)
        labels = {"model_name": model_name, "engine": engine}
        self._labels = labels

        def make(kind, name: str, doc: str, **kwargs):
            extra = kwargs.pop("labelnames", ())
            metric = kind(PREFIX + name, doc, labelnames=("model_name", "engine", *extra), registry=registry,
                          **kwargs)
            return metric if extra else metric.labels(**labels)

        seconds = buckets.seconds_edges
        self.num_requests_running = make(Gauge, "num_requests_running", "Requests in the running batch")
        self.num_requests_waiting = make(Gauge, "num_requests_waiting", "Requests waiting to be admitted")
        self.kv_cache_usage = make(Gauge, "kv_cache_usage_perc", "Fraction of KV cache blocks in use (0-1)")
        self.prompt_tokens = make(Counter, "prompt_tokens", "Prompt tokens of requests whose prefill completed")
        self.generation_tokens = make(Counter, "generation_tokens", "Output tokens generated")
        self.num_preemptions = make(Counter, "num_preemptions", "Requests preempted (to be recomputed)")
        self.num_relegations = make(Counter, "num_relegations", "Requests served after the others because their TTFT "
                                    "deadline had passed (SLO relegation)")
        self._request_success = make(Counter, "request_success", "Finished requests by finish reason",
                                     labelnames=("finished_reason",))
        self._success = {reason: self._request_success.labels(finished_reason=reason.value, **labels)
                         for reason in FinishReason}
        self._request_rejected = make(Counter, "request_rejected", "Requests refused before reaching the engine, "
                                      "by reason (queue_full and ttft_unreachable: 429, bad_request: 400, "
                                      "too_large: 413, ...)",
                                      labelnames=("reason",))
        self._rejected = {status: self._request_rejected.labels(reason=reason, **labels)
                          for status, reason in _REJECTION_REASONS.items()}
        self._rejected_other = self._request_rejected.labels(reason="other", **labels)
        self._ttft_unreachable = self._request_rejected.labels(reason="ttft_unreachable", **labels)
        too_many = make(Counter, "request_429", "Requests answered 429 Too Many Requests, by reason (queue_full: "
                        "the waiting queue is at --max-waiting; ttft_unreachable: SLO admission)",
                        labelnames=("reason",))
        self._429 = {"queue_full": too_many.labels(reason="queue_full", **labels),
                     "ttft_unreachable": too_many.labels(reason="ttft_unreachable", **labels)}

        # Per request, per class.
        by_class = ("slo_class",)
        self._class_families = (
            make(Histogram, "time_to_first_token_seconds", "Arrival to first output token",
                 buckets=seconds(buckets.TTFT_SECONDS, targets), labelnames=by_class),
            make(Histogram, "inter_token_latency_seconds", "Gap between consecutive output tokens of a request",
                 buckets=seconds(buckets.STEP_SECONDS, targets), labelnames=by_class),
            make(Histogram, "e2e_request_latency_seconds", "Arrival to last output token",
                 buckets=seconds(buckets.REQUEST_SECONDS, targets), labelnames=by_class),
            make(Histogram, "request_queue_time_seconds", "Arrival to first scheduled",
                 buckets=seconds(buckets.TTFT_SECONDS, targets), labelnames=by_class),
            make(Counter, "slo_tbt_gaps", "Token gaps of requests whose class declares a TBT target",
                 labelnames=by_class),
            make(Counter, "slo_tbt_gaps_within_target", "Token gaps within their class's TBT target",
                 labelnames=by_class),
            make(Counter, "slo_ttft_requests", "First tokens of requests whose class declares a TTFT target",
                 labelnames=by_class),
            make(Counter, "slo_ttft_requests_within_target", "First tokens within their class's TTFT target",
                 labelnames=by_class),
        )
        self._series: dict[str, _ClassSeries] = {}
        self._targets: SloTargets | None = None
        self._slo_policy_info = make(Gauge, "slo_policy_info", "1 for the SLO policy in force, by its name",
                                     labelnames=("name",))
        self._slo_targets = make(Gauge, "slo_target_seconds", "The SLO policy's targets in force, by class and "
                                 "target (ttft or tbt)", labelnames=("slo_class", "target"))
        self._budget_bounds = make(Gauge, "slo_budget_bound_tokens", "The SLO policy's token budget bounds in "
                                   "force (bound: min or max)", labelnames=("bound",))
        self._slo_policy: str | None = None
        self.set_slo_policy(name, slo_classes, targets, budget_bounds)

        self.request_prompt_tokens = make(Histogram, "request_prompt_tokens", "Prompt tokens per finished request",
                                          buckets=buckets.TOKENS)
        self.request_generation_tokens = make(Histogram, "request_generation_tokens",
                                              "Output tokens per finished request", buckets=buckets.TOKENS)
        self.request_max_num_generation_tokens = make(Histogram, "request_max_num_generation_tokens",
                                                      "max_tokens of each admitted request", buckets=buckets.TOKENS)
        request_seconds = seconds(buckets.REQUEST_SECONDS, targets)
        self.request_prefill_time = make(Histogram, "request_prefill_time_seconds",
                                         "First scheduled to first output token, per finished request",
                                         buckets=request_seconds)
        self.request_decode_time = make(Histogram, "request_decode_time_seconds",
                                        "First output token to last, per finished request", buckets=request_seconds)
        self.request_inference_time = make(Histogram, "request_inference_time_seconds",
                                           "First scheduled to last output token, per finished request",
                                           buckets=request_seconds)

        # Per iteration.
        step_seconds = seconds(buckets.STEP_SECONDS, targets)
        self.iteration_duration = make(Histogram, "iteration_duration_seconds", "Executor time of one engine "
                                       "iteration", buckets=step_seconds)
        self.iteration_tokens = make(Histogram, "iteration_tokens_total", "Tokens (prompt and decode) processed "
                                     "per iteration", buckets=buckets.TOKENS)
        self.iteration_prefill_tokens = make(Histogram, "iteration_prefill_tokens",
                                             "Prompt tokens processed per iteration", buckets=(0.0, *buckets.TOKENS))
        self.iteration_decode_tokens = make(Histogram, "iteration_decode_tokens",
                                            "Decode tokens processed per iteration", buckets=(0.0, *buckets.TOKENS))
        # vLLM's names and units: tokens of admitted requests looked up, and those found cached.
        self.prefix_cache_queries = make(Counter, "prefix_cache_queries",
                                         "Tokens of admitted requests looked up in the prefix cache")
        self.prefix_cache_hits = make(Counter, "prefix_cache_hits",
                                      "Tokens of admitted requests found in the prefix cache (not computed)")
        self.iteration_token_budget = make(Histogram, "iteration_token_budget_tokens", "Token budget each "
                                           "iteration ran under", buckets=buckets.BUDGET_TOKENS)
        self.iteration_max_chunk = make(Histogram, "iteration_max_chunk_tokens", "Most prompt tokens per request "
                                        "each iteration allowed", buckets=buckets.BUDGET_TOKENS)
        self.iteration_waiting = make(Histogram, "iteration_waiting_requests", "Requests left waiting after each "
                                      "iteration (queue pressure)", buckets=buckets.WAITING_REQUESTS)

        # The budget controller.
        self._decisions = make(Counter, "controller_decisions", "Iterations by the reason the budget policy gave "
                               "for their budget", labelnames=("reason",))
        self._decision_by_reason: dict[str, Counter] = {}
        self.controller_fallbacks = make(Counter, "controller_fallbacks", "Iterations run under the SLO policy's "
                                         "fallback budget (the policy's model not yet trusted, or stalled)")
        self.predicted_step = make(Histogram, "controller_predicted_step_seconds", "The budget policy's predicted "
                                   "period of each iteration it predicted", buckets=step_seconds)
        self.observed_step = make(Histogram, "controller_observed_step_seconds", "Measured period (executor time "
                                  "and the host gap before it) of each iteration the policy predicted",
                                  buckets=step_seconds)
        self.step_time_ratio = make(Histogram, "controller_step_time_ratio", "Observed / predicted period of each "
                                    "predicted iteration", buckets=buckets.RATIO)
        controller_info = make(Gauge, "controller_info", "1 for the budget policy in force, by its class",
                               labelnames=("policy",))
        if budget_policy is not None:
            controller_info.labels(policy=type(budget_policy).__name__, **labels).set(1)
            registry.register(LatencyModelCollector(PREFIX, labels, budget_policy.latency_model_error))

        # The process (vLLM's exporters: resident memory, CPU seconds, open files, GC, Python).
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)

    def set_slo_policy(self, name: str | None, slo_classes: Sequence[str], targets: SloTargets | None = None,
                       budget_bounds: tuple[int, int] | None = None) -> None:
        """Name the SLO policy now in force (None: none) in slo_policy_info, removing the old
        name's series; give its classes their per-request series (those of earlier policies stay)
        and count attainment against `targets` from now on (None: no longer counted); export
        `targets` and `budget_bounds` (min, max tokens) as gauges in place of the old ones.
        Bucket edges stay those set at construction."""
        self._slo_targets.clear()
        for cls, own in ((("", targets), *targets.classes.items()) if targets is not None else ()):
            for kind, value in (("ttft", own.ttft_s), ("tbt", own.tbt_s)):
                if value is not None:
                    self._slo_targets.labels(slo_class=cls, target=kind, **self._labels).set(value)
        self._budget_bounds.clear()
        if budget_bounds is not None:
            for bound, tokens in zip(("min", "max"), budget_bounds):
                self._budget_bounds.labels(bound=bound, **self._labels).set(tokens)
        series = {}
        self._targets = targets
        for cls in dict.fromkeys(("", *self._series, *slo_classes)):
            own = targets.targets_for(cls or None) if targets is not None and (not cls or cls in targets.classes) \
                else None
            ttft = own.ttft_s if own is not None and own.ttft_s is not None else math.inf
            tbt = own.tbt_s if own is not None and own.tbt_s is not None else math.inf
            children = (f.labels(slo_class=cls, **self._labels) for f in self._class_families)
            series[cls] = _ClassSeries(*children, ttft, tbt)
        # A new dict, swapped in whole: the engine thread reads it while the event loop updates it.
        self._series = series
        if self._slo_policy is not None and self._slo_policy != name:
            self._slo_policy_info.remove(self._model_name, self._engine, self._slo_policy)
        if name is not None:
            self._slo_policy_info.labels(name=name, **self._labels).set(1)
        self._slo_policy = name

    # -- EngineObserver --------------------------------------------------------------------------

    def observe_step(self, stats: StepStats) -> None:
        shape = stats.shape
        self.iteration_duration.observe(stats.duration_s)
        self.iteration_tokens.observe(shape.num_tokens)
        self.iteration_prefill_tokens.observe(shape.num_prefill_tokens)
        self.iteration_decode_tokens.observe(shape.num_decode_tokens)
        self.iteration_token_budget.observe(stats.token_budget)
        self.iteration_max_chunk.observe(stats.max_chunk)
        self.iteration_waiting.observe(stats.num_waiting)
        reason = stats.budget_reason
        counter = self._decision_by_reason.get(reason)
        if counter is None:
            counter = self._decision_counter(reason)
        counter.inc()
        if reason in FALLBACK_REASONS:
            self.controller_fallbacks.inc()
        predicted = stats.predicted_duration_s
        if predicted:
            observed = stats.duration_s + (stats.host_gap_s or 0.0)  # the period, as the model learns it
            self.predicted_step.observe(predicted)
            self.observed_step.observe(observed)
            self.step_time_ratio.observe(observed / predicted)
        if stats.num_preempted:
            self.num_preemptions.inc(stats.num_preempted)
        if stats.num_relegated:
            self.num_relegations.inc(stats.num_relegated)
        if stats.num_cache_query_tokens:
            self.prefix_cache_queries.inc(stats.num_cache_query_tokens)
            self.prefix_cache_hits.inc(stats.num_cached_tokens)
        self._set_queue(stats.num_waiting, stats.num_running, stats.num_free_blocks, stats.num_total_blocks)

    def _decision_counter(self, reason: str) -> Counter:
        # Reasons are the policy's free text: the first _MAX_REASONS get series, later ones "other".
        label = reason or "none"
        if len(self._decision_by_reason) >= _MAX_REASONS:
            label = "other"
        counter = self._decisions.labels(reason=label, **self._labels)
        self._decision_by_reason = {**self._decision_by_reason, reason: counter}
        return counter

    def observe_state(self, state: EngineState) -> None:
        self._set_queue(state.num_waiting, state.num_running, state.num_free_blocks, state.num_total_blocks)

    def observe_added(self, max_tokens: Sequence[int]) -> None:
        """Requests were admitted, asking for at most max_tokens[i] tokens each
        (request_max_num_generation_tokens)."""
        observe = self.request_max_num_generation_tokens.observe
        for tokens in max_tokens:
            observe(tokens)

    def _series_of(self, slo_class: str | None) -> _ClassSeries:
        """The per-request series of `slo_class` (None: those of requests without a class). A
        name not given at construction shares the "" series: the label never takes a value
        outside the policy's classes."""
        return self._series.get(slo_class or "", self._series[""])

    def observe_output(self, output: RequestOutput) -> None:
        timeline = output.timeline
        series = self._series_of(output.slo_class)
        new = len(output.new_token_ids)
        if new:
            self.generation_tokens.inc(new)
            times = timeline.token_times
            first = max(1, len(times) - new)
            within = 0
            tbt = series.tbt_target_s
            for i in range(first, len(times)):
                gap = times[i] - times[i - 1]
                series.inter_token.observe(gap)
                within += gap <= tbt
            if len(times) > first and tbt != math.inf:
                series.gaps.inc(len(times) - first)
                series.gaps_within.inc(within)
        if new and len(output.token_ids) == new:  # the request's first tokens: its prefill is done
            self.prompt_tokens.inc(len(output.prompt_token_ids))
            ttft = timeline.ttft
            series.ttft.observe(ttft)
            series.queue_time.observe(timeline.scheduling_delay)
            if series.ttft_target_s != math.inf:
                series.first_tokens.inc()
                if ttft <= series.ttft_target_s:
                    series.first_tokens_within.inc()
        if output.finished:
            self._success[output.finish_reason].inc()
            if output.finish_reason is not FinishReason.ABORT:
                series.e2e.observe(timeline.finished_time - timeline.arrival_time)
                self.request_prompt_tokens.observe(len(output.prompt_token_ids))
                self.request_generation_tokens.observe(len(output.token_ids))
                scheduled, first_token = timeline.first_scheduled_time, timeline.first_token_time
                if scheduled is not None and first_token is not None:
                    self.request_prefill_time.observe(first_token - scheduled)
                    self.request_decode_time.observe(timeline.finished_time - first_token)
                    self.request_inference_time.observe(timeline.finished_time - scheduled)

    def observe_rejection(self, status: int, code: str | None = None) -> None:
        """A request answered with an error status (4xx, 503) before or instead of generating;
        `code` "ttft_unreachable" (a 429 of SLO admission) is counted apart from a full queue."""
        counter = self._ttft_unreachable if code == "ttft_unreachable" else self._rejected.get(status)
        (counter or self._rejected_other).inc()
        if status == 429:
            self._429["ttft_unreachable" if code == "ttft_unreachable" else "queue_full"].inc()

    # -- exposition ------------------------------------------------------------------------------

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text exposition and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def _set_queue(self, num_waiting: int, num_running: int, num_free_blocks: int, num_total_blocks: int) -> None:
        self.num_requests_waiting.set(num_waiting)
        self.num_requests_running.set(num_running)
        self.kv_cache_usage.set(1.0 - num_free_blocks / num_total_blocks if num_total_blocks else 0.0)
