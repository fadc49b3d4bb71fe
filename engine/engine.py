"""LLMEngine: one iteration = decide budget -> schedule -> execute -> update -> emit stats."""

from __future__ import annotations

import itertools
import logging
import math
import time
from typing import Callable

from adaptive_sarathi.engine.budget import BudgetPolicy, StepBudget
from adaptive_sarathi.engine.batch import ScheduledBatch, StepResult, TokenLogprobs
from adaptive_sarathi.engine.executor import Executor
from adaptive_sarathi.engine.json_mode import JSONMode
from adaptive_sarathi.engine.latency.shape import StepShape
from adaptive_sarathi.engine.outputs import RequestOutput
from adaptive_sarathi.engine.request import FinishReason, Request
from adaptive_sarathi.engine.sampling_params import SamplingParams
from adaptive_sarathi.engine.schedulers.base import RequestUpdate, Scheduler
from adaptive_sarathi.engine.state import snapshot_state
from adaptive_sarathi.engine.stats import EngineState, StepStats
from adaptive_sarathi.engine.stop_strings import find_stop
from adaptive_sarathi.engine.tokenizer import Tokenizer

StatsListener = Callable[[StepStats], None]

logger = logging.getLogger(__name__)


class InvalidRequestError(ValueError):
    """A request the engine refuses; the message names the field and the fix. Nothing else the
    engine holds is affected."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


class _TextState:
    """Detokenized output and stop-string handling of one request."""

    def __init__(self, tokenizer: Tokenizer | None, stops: tuple[str, ...], prompt_token_ids: list[int]):
        self.detok = tokenizer.incremental_detokenizer(prompt_token_ids) if tokenizer is not None else None
        self.stops = stops
        self.text = ""

    def append(self, new_ids: list[int], final: bool, check_stops: bool = True) -> tuple[str, bool]:
        """Add tokens (the last ones when `final`); returns (text delta, whether a stop string
        ended the output). Without `check_stops` (before min_tokens) stop strings in the new text
        are kept as text."""
        if self.detok is None:
            return "", False
        delta = self.detok.push(new_ids)
        if final:
            delta += self.detok.flush()
        text = self.text + delta
        cut = find_stop(text, len(delta), self.stops) if self.stops and check_stops else None
        if cut is not None:
            delta = text[len(self.text):cut] if cut >= len(self.text) else ""
            self.text = text[:cut]
            return delta, True
        self.text = text
        return delta, False


class LLMEngine:
    """Drives the scheduler, the budget policy and an executor one step at a time.

    The engine clock is `clock()` seconds (monotonic host time for the real executor, a virtual
    clock for the simulated one). Not thread-safe: one thread calls add_request/step/abort.
    """

    def __init__(self, scheduler: Scheduler, executor: Executor, policy: BudgetPolicy,
                 tokenizer: Tokenizer | None, max_model_len: int, eos_token_ids: tuple[int, ...],
                 clock: Callable[[], float] = time.monotonic):
        self.scheduler = scheduler
        self.executor = executor
        self.policy = policy
        self.tokenizer = tokenizer
        self.max_model_len = max_model_len
        self.eos_token_ids = tuple(eos_token_ids)
        self.clock = clock
        self.stats_listeners: list[StatsListener] = []
        self._live: dict[str, tuple[Request, _TextState]] = {}
        self._json: JSONMode | None = None  # built by the first JSON-mode request
        self._ids = itertools.count()
        self._step_index = 0
        # When the last step's executor returned, if the engine has had work ever since; None after
        # an idle spell (StepStats.host_gap_s).
        self._busy_since: float | None = None

    # -- intake ---------------------------------------------------------------------------------

    def add_request(self, prompt: str | list[int], params: SamplingParams | None = None,
                    request_id: str | None = None, arrival_time: float | None = None,
                    slo_class: str | None = None) -> str:
        """Validate and queue a request; returns its id. `slo_class` names the SLO policy's class
        whose targets the request is served to (None: the top-level targets; the caller checks the
        name). Raises InvalidRequestError (field named) for an empty or over-long prompt, token
        ids outside the vocabulary, a duplicate id, or text/stop strings on a model without a
        tokenizer."""
        params = params or SamplingParams()
        token_ids = self.tokenize(prompt)
        if not token_ids:
            raise InvalidRequestError("prompt", "prompt is empty: send at least one token of text")
        if len(token_ids) >= self.max_model_len:
            raise InvalidRequestError(
                "prompt", f"prompt has {len(token_ids)} tokens but the context window is {self.max_model_len}: "
                          f"shorten the prompt to at most {self.max_model_len - 1} tokens")
        if params.stop and self.tokenizer is None:
            raise InvalidRequestError("stop", "stop strings need a model with a tokenizer: use stop_token_ids")
        request_id = request_id if request_id is not None else f"req-{next(self._ids)}"
        if request_id in self._live:
            raise InvalidRequestError("request_id", f"request_id={request_id!r} is already in flight: use a new id")
        arrival = self.clock() if arrival_time is None else arrival_time
        ttft_s, tbt_s = self._targets_of(slo_class)
        request = Request(request_id, token_ids, params, arrival_time=arrival, eos_token_ids=self.eos_token_ids,
                          slo_class=slo_class, ttft_deadline_s=arrival + ttft_s, tbt_target_s=tbt_s,
                          json_mode=self._json_mode() if params.json_object else None)
        self.scheduler.add_request(request)  # first: a refusal there must leave nothing behind here
        self._live[request_id] = (request, _TextState(self.tokenizer, params.stop, token_ids))
        return request_id

    def _json_mode(self) -> JSONMode:
        """The model's JSONMode, built on first use. Raises InvalidRequestError (field
        response_format) when the tokenizer cannot say its tokens' bytes."""
        if self._json is None:
            if self.tokenizer is None:
                raise InvalidRequestError("response_format", "JSON mode needs a model with a tokenizer")
            try:
                self._json = JSONMode(self.tokenizer.token_bytes())
            except ValueError as err:
                raise InvalidRequestError("response_format",
                                          f"JSON mode is not available for this model: {err}") from None
        return self._json

    def _targets_of(self, slo_class: str | None) -> tuple[float, float]:
        """(TTFT, TBT) targets in seconds of a request of `slo_class` under the policy's SLO (inf
        where none is declared). Raises InvalidRequestError for a class the SLO does not know."""
        targets = self.policy.slo_targets()
        if targets is None:
            return math.inf, math.inf
        try:
            own = targets.targets_for(slo_class)
        except ValueError as err:
            raise InvalidRequestError("slo_class", str(err)) from None
        return (math.inf if own.ttft_s is None else own.ttft_s), (math.inf if own.tbt_s is None else own.tbt_s)

    def tokenize(self, prompt: str | list[int]) -> list[int]:
        """Token ids of a text prompt, or a token-id prompt checked against the vocabulary (a new
        list). Raises InvalidRequestError (field "prompt"). Reads only the tokenizer and the
        vocabulary size, so other threads may call it while the engine steps."""
        if isinstance(prompt, str):
            if self.tokenizer is None:
                raise InvalidRequestError("prompt", "this model has no tokenizer: send the prompt as token ids")
            _check_encodable(prompt)
            try:
                return self.tokenizer.encode(prompt)
            except Exception as err:  # the Rust tokenizer raises TypeError, ValueError, ...
                raise InvalidRequestError("prompt", f"the tokenizer cannot encode this prompt: {err}") from err
        # Checks run over the distinct types and the extremes, at C speed: prompts can be long.
        if not isinstance(prompt, (list, tuple)) or not all(issubclass(t, int) and not issubclass(t, bool)
                                                          for t in set(map(type, prompt))):
            raise InvalidRequestError("prompt", "prompt must be a string or a list of integer token ids")
        vocab = self.executor.vocab_size
        if prompt and (min(prompt) < 0 or max(prompt) >= vocab):
            bad = next(t for t in prompt if not 0 <= t < vocab)
            raise InvalidRequestError("prompt", f"token id {bad} is outside the vocabulary [0, {vocab})")
        return list(prompt)

    def abort_request(self, request_id: str) -> RequestOutput | None:
        """Stop a request and free its KV blocks. Returns its final output (finish reason abort,
        no new tokens, the text detokenized so far), or None when it is unknown or finished
        (nothing changes then)."""
        live = self._live.get(request_id)
        if live is None or not self.scheduler.finish_request(request_id, FinishReason.ABORT, self.clock()):
            return None
        del self._live[request_id]
        if not self.scheduler.has_unfinished():
            self._busy_since = None
        request, text_state = live
        return RequestOutput(request_id, request.prompt_token_ids, list(request.output_token_ids), [],
                             text_state.text, "", True, FinishReason.ABORT, request.timeline, request.num_preemptions,
                             None, request.slo_class, request.num_cached_tokens)

    def has_unfinished_requests(self) -> bool:
        return self.scheduler.has_unfinished()

    def admits(self, num_prompt_tokens: int, slo_class: str | None = None) -> bool:
        """Whether the budget policy expects a new request of that many prompt tokens and that
        class to be served within its TTFT target now (BudgetPolicy.admits)."""
        return self.policy.admits(self.state(), num_prompt_tokens, slo_class)

    def state(self) -> EngineState:
        """What the budget policy sees now (the snapshot step() hands it); changes nothing that is
        scheduled (see snapshot_state)."""
        return snapshot_state(self.scheduler, self.clock())

    @property
    def num_waiting(self) -> int:
        """Requests queued for admission (new or preempted), including any not yet arrived."""
        return self.scheduler.num_waiting

    @property
    def num_running(self) -> int:
        """Requests admitted and holding KV blocks."""
        return self.scheduler.num_running

    @property
    def num_steps(self) -> int:
        """Steps executed so far; a step that found nothing to run does not count."""
        return self._step_index

    # -- one iteration --------------------------------------------------------------------------

    def step(self) -> list[RequestOutput]:
        """Run one iteration. Returns the outputs of requests that advanced; an empty list when
        nothing could run (e.g. every waiting request arrives in the future)."""
        start = self.clock()
        budget = self.policy.decide(snapshot_state(self.scheduler, start))
        batch = self.scheduler.schedule(budget, start)
        if batch.is_empty:
            self._busy_since = None
            return []
        result = self.executor.execute(batch)
        end = self.clock()
        updates = self.scheduler.update(result, end)
        stats = self._stats(budget, batch, result, updates, start, end)
        self._step_index += 1
        self.policy.observe(stats)
        for listener in self.stats_listeners:
            listener(stats)
        logprobs = result.logprobs
        outputs = [self._output(u, end, logprobs.get(u.request_id) if logprobs else None) for u in updates]
        # With nothing left the next step waits for a request: that gap is idle, not this step's cost.
        self._busy_since = end if self.scheduler.has_unfinished() else None
        return outputs

    def _stats(self, budget: StepBudget, batch: ScheduledBatch, result: StepResult, updates: list[RequestUpdate],
               start: float, end: float) -> StepStats:
        """The StepStats of the step just updated (queue and KV counts as the update left them)."""
        sched = self.scheduler
        first_token_latencies, max_gap = _token_latencies(updates, self._live, end)
        return StepStats(
            step_index=self._step_index, start_time_s=start, duration_s=result.duration_s,
            shape=StepShape.from_batch(batch), num_seqs=len(batch.chunks),
            num_waiting=sched.num_waiting, num_running=sched.num_running,
            num_free_blocks=sched.block_manager.num_free_blocks,
            num_total_blocks=sched.block_manager.num_total_blocks,
            num_preempted=len(batch.preempted_ids), num_relegated=len(batch.relegated_ids),
            token_budget=budget.token_budget,
            max_chunk=budget.chunk_limit, first_token_latencies_s=first_token_latencies, max_token_gap_s=max_gap,
            host_gap_s=None if self._busy_since is None else start - self._busy_since,
            budget_reason=budget.reason, predicted_duration_s=budget.predicted_duration_s,
            num_cache_query_tokens=batch.num_cache_query_tokens)

    def _output(self, update: RequestUpdate, now: float, logprobs: TokenLogprobs | None = None) -> RequestOutput:
        request, text_state = self._live[update.request_id]
        error = None
        try:
            delta, stopped = text_state.append(update.new_token_ids, update.finished,
                                               len(request.output_token_ids) >= request.sampling_params.min_tokens)
        except Exception as err:  # detokenizing or stop strings failed: end this request alone
            logger.exception("request %s failed while detokenizing", update.request_id)
            error = f"the output of this request could not be detokenized: {err!r}"
            delta, stopped = "", False
            if not update.finished:
                self.scheduler.finish_request(update.request_id, FinishReason.ABORT, now)
            update = RequestUpdate(update.request_id, update.new_token_ids, True, FinishReason.ABORT)
        finished, reason = update.finished, update.finish_reason
        if stopped and not finished:
            self.scheduler.finish_request(update.request_id, FinishReason.STOP, now)
            finished, reason = True, FinishReason.STOP
        elif stopped:
            reason = FinishReason.STOP
        if finished:
            del self._live[update.request_id]
        # Positional, in field order (request_id, prompt_token_ids, token_ids, new_token_ids, text,
        # delta_text, finished, finish_reason, timeline, num_preemptions, error, slo_class,
        # new_logprobs, num_cached_tokens): one per request per step.
        return RequestOutput(update.request_id, request.prompt_token_ids, list(request.output_token_ids),
                             update.new_token_ids, text_state.text, delta, finished, reason, request.timeline,
                             request.num_preemptions, error, request.slo_class,
                             None if logprobs is None else [logprobs], request.num_cached_tokens)


def _check_encodable(prompt: str) -> None:
    """Refuse text that has no UTF-8 form (a lone UTF-16 surrogate such as JSON's "\\ud800")."""
    try:
        prompt.encode("utf-8")
    except UnicodeEncodeError as err:
        raise InvalidRequestError(
            "prompt", f"the prompt holds a lone UTF-16 surrogate {prompt[err.start]!r} at character "
                      f"{err.start}: send valid Unicode (surrogates only in pairs)") from None


def _token_latencies(updates: list[RequestUpdate], live: dict[str, tuple[Request, _TextState]],
                     now: float) -> tuple[tuple[float, ...], float]:
    """TTFTs completed at `now` and the largest gap between consecutive tokens of one request."""
    ttfts: list[float] = []
    max_gap = 0.0
    for u in updates:
        if not u.new_token_ids:
            continue
        request = live[u.request_id][0]
        times = request.timeline.token_times
        if len(times) == 1:
            ttfts.append(now - request.arrival_time)
        elif times[-1] - times[-2] > max_gap:
            max_gap = times[-1] - times[-2]
    return tuple(ttfts), max_gap
