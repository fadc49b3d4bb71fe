"""Requests offered to a simulated engine as they arrive, refused where its policy would answer 429."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from adaptive_sarathi.engine.engine import LLMEngine
from adaptive_sarathi.engine.request import Request
from adaptive_sarathi.engine.sampling_params import SamplingParams


@dataclass(frozen=True)
class PendingRequest:
    """One workload request, ready to add to an engine."""

    request_id: str
    prompt_token_ids: list[int]
    params: SamplingParams
    arrival_time_s: float
    slo_class: str | None

    def add_to(self, engine: LLMEngine) -> Request:
        """Queue it on `engine` (arriving at arrival_time_s); returns the engine's Request."""
        engine.add_request(self.prompt_token_ids, self.params, request_id=self.request_id,
                           arrival_time=self.arrival_time_s, slo_class=self.slo_class)
        return engine.scheduler.get_request(self.request_id)

    def offer_to(self, engine: LLMEngine) -> Request | None:
        """Ask `engine` whether to admit it now (LLMEngine.admits, the check behind a server's
        429) and queue it if so; returns the engine's Request, or None when refused (the engine
        is then unchanged)."""
        if not engine.admits(len(self.prompt_token_ids), self.slo_class):
            return None
        return self.add_to(engine)


class AdmissionGate:
    """Holds requests until they arrive, then asks the engine's policy whether to admit each
    (LLMEngine.admits, as the server does before queueing a request) and adds or refuses it.
    `admitted` holds the engine's Requests in the order they were added, `refused` the
    PendingRequests turned away."""

    def __init__(self, requests: Sequence[PendingRequest]):
        self._pending = sorted(requests, key=lambda r: r.arrival_time_s)
        self._next = 0
        self.admitted: list[Request] = []
        self.refused: list[PendingRequest] = []

    @property
    def num_pending(self) -> int:
        """Requests not offered yet."""
        return len(self._pending) - self._next

    def offer_arrived(self, engine: LLMEngine, now_s: float) -> int:
        """Offer `engine` every request arrived by `now_s`, in arrival order; returns how many
        were refused."""
        refused = 0
        while self._next < len(self._pending) and self._pending[self._next].arrival_time_s <= now_s:
            r = self._pending[self._next]
            self._next += 1
            request = r.offer_to(engine)
            if request is not None:
                self.admitted.append(request)
            else:
                self.refused.append(r)
                refused += 1
        return refused
