"""Per-request sampling parameters, validated on construction."""

from __future__ import annotations

from dataclasses import dataclass

# The most top alternatives one token's logprobs may list (vLLM's default --max-logprobs).
MAX_LOGPROBS = 20

# Below this temperature sampling is greedy: logits / 1e-38 overflow to inf and the softmax of
# infinities is NaN, so the draw would be garbage rather than the argmax (vLLM uses the same bound).
GREEDY_TEMPERATURE = 1e-5


@dataclass(frozen=True)
class SamplingParams:
    """How one request's tokens are chosen and when it stops.

    temperature 0 (or below GREEDY_TEMPERATURE) means greedy. top_k 0 (or -1) and top_p 1.0
    disable those filters. A seed makes sampling reproducible whatever the batch composition (and
    across preemption).

    Penalties follow vLLM and apply to the logits before temperature and the filters (so greedy
    requests feel them too): repetition_penalty r (1 = off) divides a positive logit by r and
    multiplies a negative one by r for every token seen in the prompt or the output;
    frequency_penalty f subtracts f x (times the token occurs in the output) and presence_penalty
    p subtracts p once for every token the output holds. min_tokens: the EOS and stop token ids
    cannot be drawn (and stop strings do not end the output) before that many outputs.
    logprobs: None = none returned; k >= 0 = the chosen token's log-probability and the k most
    likely tokens' (log-softmax of the model's raw logits, before penalties and temperature, as
    vLLM returns by default).
    json_object: JSON mode: every output is a prefix of one JSON object, and EOS (or a stop token
    id) can only end it once the object is complete (engine/json_mode.py); needs a byte-level BPE
    tokenizer. Stop strings and max_tokens may still cut it short, as in OpenAI's JSON mode.
    Raises ValueError naming the field and the allowed range on a bad value.
    """

    max_tokens: int = 16
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0  # drop tokens whose probability is below min_p * the top token's (0 = off)
    seed: int | None = None
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    min_tokens: int = 0
    logprobs: int | None = None
    json_object: bool = False

    def __post_init__(self) -> None:
        # Accept lists and single strings for convenience; store tuples so params stay hashable.
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))
        object.__setattr__(self, "stop", tuple(self.stop))
        object.__setattr__(self, "stop_token_ids", tuple(self.stop_token_ids))
        _check(isinstance(self.max_tokens, int) and self.max_tokens >= 1,
               "max_tokens", self.max_tokens, "an integer >= 1")
        _check(isinstance(self.temperature, (int, float)) and 0.0 <= self.temperature <= 100.0,
               "temperature", self.temperature, "a number in [0, 100] (0 = greedy)")
        _check(isinstance(self.top_p, (int, float)) and 0.0 < self.top_p <= 1.0,
               "top_p", self.top_p, "a number in (0, 1]")
        _check(isinstance(self.top_k, int) and self.top_k >= -1,
               "top_k", self.top_k, "an integer >= 0 (0 or -1 disables it)")
        _check(isinstance(self.min_p, (int, float)) and 0.0 <= self.min_p <= 1.0,
               "min_p", self.min_p, "a number in [0, 1] (0 disables it)")
        _check(self.seed is None or isinstance(self.seed, int), "seed", self.seed, "an integer or None")
        _check(all(isinstance(s, str) and s for s in self.stop),
               "stop", self.stop, "non-empty strings")
        _check(all(isinstance(t, int) and t >= 0 for t in self.stop_token_ids),
               "stop_token_ids", self.stop_token_ids, "non-negative token ids")
        for name in ("presence_penalty", "frequency_penalty"):
            value = getattr(self, name)
            _check(isinstance(value, (int, float)) and -2.0 <= value <= 2.0, name, value, "a number in [-2, 2]")
        _check(isinstance(self.repetition_penalty, (int, float)) and 0.0 < self.repetition_penalty <= 100.0,
               "repetition_penalty", self.repetition_penalty, "a number in (0, 100] (1 disables it)")
        _check(isinstance(self.min_tokens, int) and 0 <= self.min_tokens <= self.max_tokens,
               "min_tokens", self.min_tokens, f"an integer in [0, max_tokens={self.max_tokens}]")
        _check(self.logprobs is None or (isinstance(self.logprobs, int) and 0 <= self.logprobs <= MAX_LOGPROBS),
               "logprobs", self.logprobs, f"None or an integer in [0, {MAX_LOGPROBS}]")

    @property
    def greedy(self) -> bool:
        return self.temperature < GREEDY_TEMPERATURE

    @property
    def has_penalties(self) -> bool:
        return self.presence_penalty != 0.0 or self.frequency_penalty != 0.0 or self.repetition_penalty != 1.0

    @property
    def needs_history(self) -> bool:
        """Whether sampling reads the request's tokens so far (penalties, min_tokens, JSON mode): only then
        does the scheduler hand them to the sampler."""
        return self.min_tokens > 0 or self.has_penalties or self.json_object


def _check(ok: bool, name: str, value: object, expected: str) -> None:
    if not ok:
        raise ValueError(f"SamplingParams.{name}={value!r} is invalid: use {expected}")
