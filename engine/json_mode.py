"""JSON mode (OpenAI's response_format {"type": "json_object"}): which tokens keep a request's
output a prefix of one JSON object.

JSONMode holds one model's token bytes (Tokenizer.token_bytes) and answers, for a request's
outputs so far, whether a token may come next: a token whose bytes JSONPrefix accepts after the
output's bytes, or a stop token (EOS, stop_token_ids) once the object is complete. The sampler
asks it only about the tokens it draws (engine/sampler.py), so a step costs a few checks unless
the model keeps proposing refused tokens. Output states are cached per request list, so each
step feeds only the new token.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from adaptive_sarathi.engine.json_prefix import JSONPrefix

_CACHE_SIZE = 4096  # requests whose output state is kept; more only costs a re-read


class JSONMode:
    """The JSON-mode checks of one model. Not thread-safe (the engine thread alone samples)."""

    def __init__(self, token_bytes: Sequence[bytes | None]):
        self.token_bytes = list(token_bytes)
        # output list -> (the list itself, tokens read, state): keyed by id, checked by identity.
        self._states: OrderedDict[int, tuple[list[int], int, JSONPrefix | None]] = OrderedDict()

    def __getstate__(self) -> dict:  # for tensor-parallel workers: the cache stays behind
        return {"token_bytes": self.token_bytes}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["token_bytes"])

    def state_of(self, output_token_ids: list[int]) -> JSONPrefix | None:
        """The JSONPrefix after `output_token_ids` (do not feed it: copy first), or None when the
        outputs are no JSON object prefix (they cannot be, if every token came through allows)."""
        key = id(output_token_ids)
        cached = self._states.get(key)
        if cached is not None and cached[0] is output_token_ids and cached[1] <= len(output_token_ids):
            _, start, state = cached
            state = None if state is None else state.copy()
        else:
            start, state = 0, JSONPrefix()
        for token in output_token_ids[start:]:
            data = self.token_bytes[token] if token < len(self.token_bytes) else None
            if state is None or data is None or not state.feed(data):
                state = None  # a stop token or a refused one: nothing may follow
        self._states[key] = (output_token_ids, len(output_token_ids), state)
        self._states.move_to_end(key)
        if len(self._states) > _CACHE_SIZE:
            self._states.popitem(last=False)
        return state

    def allows(self, state: JSONPrefix | None, token: int, stop_ids: Sequence[int]) -> bool:
        """Whether `token` may follow the output whose state is `state`."""
        if state is None:
            return False
        if token in stop_ids:
            return state.complete
        data = self.token_bytes[token] if token < len(self.token_bytes) else None
        return data is not None and state.copy().feed(data)

    def allowed(self, state: JSONPrefix | None, vocab: int, stop_ids: Sequence[int]) -> list[int]:
        """Every token id below `vocab` that `allows` admits (one check per token: the slow path)."""
        return [t for t in range(vocab) if self.allows(state, t, stop_ids)]
