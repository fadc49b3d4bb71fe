"""Multi-turn conversations: each turn resends the whole conversation so far, behind a system
prompt that many conversations share. Seeded, with real token ids, so prefix caching has exactly
the sharing the workload describes."""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np

from adaptive_sarathi.workloads.lengths import Distribution
from adaptive_sarathi.workloads.mix import check_slo_class
from adaptive_sarathi.workloads.request import Workload, WorkloadError, WorkloadRequest

# Token ids are drawn from [1, 256): CPython keeps these ints as shared objects, so the prompts of a
# simulated workload of millions of tokens cost a pointer per token. Two independently drawn runs
# of k tokens still agree with probability 255^-k: a 16-token block, never.
_TOKEN_LOW, _TOKEN_HIGH = 1, 256


@dataclass(frozen=True)
class ConversationWorkload:
    """`num_conversations` chats starting as a Poisson process of `conversation_qps` per second.

    A conversation opens with one of `num_system_prompts` system prompts of `system_prompt_tokens`
    tokens (drawn uniformly; 0 tokens: none), then runs `turns` turns. Turn k's prompt is the
    system prompt, every earlier user message and answer, and a new user message of
    `user_tokens` tokens; it asks for an answer of `output_tokens` tokens, which the next turn
    repeats. The next turn arrives `think_time_s` (exponential mean, seconds) after this one
    arrives: an open loop, so a turn sent before the previous answer is done finds only the part
    computed so far in the cache. A conversation ends early before a turn whose prompt plus
    answer would exceed `max_context_tokens`.

    Same interface as WorkloadSpec where simulations and capacity searches use it: `generate()`,
    `scaled(factor)`, `mean_qps` and `slo_classes`. scaled(factor) runs the same conversations
    `factor` times faster: starts `factor` times as often and think times divided by `factor`,
    so every arrival time is divided by it and the request rate is multiplied by it (with think
    times kept, a finite set of conversations would bound the load however often they start:
    each conversation's turns would still come one think time apart). Raises WorkloadError
    naming a bad field.
    """

    num_conversations: int
    conversation_qps: float
    turns: Distribution
    user_tokens: Distribution
    output_tokens: Distribution
    system_prompt_tokens: int = 0
    num_system_prompts: int = 1
    think_time_s: float = 30.0
    max_context_tokens: int = 8192
    slo_class: str | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        for name, low in (("num_conversations", 1), ("num_system_prompts", 1), ("system_prompt_tokens", 0),
                          ("max_context_tokens", 2)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise WorkloadError(f"{name}={value!r} is invalid: use an integer >= {low}")
        for name in ("conversation_qps", "think_time_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
                raise WorkloadError(f"{name}={value!r} is invalid: use a finite number > 0")
        if not isinstance(self.seed, int):
            raise WorkloadError(f"seed={self.seed!r} is invalid: use an integer")
        check_slo_class(self.slo_class)

    @property
    def slo_classes(self) -> frozenset[str]:
        return frozenset(() if self.slo_class is None else (self.slo_class,))

    @cached_property
    def _requests_per_conversation(self) -> float:
        return len(self.generate()) / self.num_conversations

    @property
    def mean_qps(self) -> float:
        """Requests per second: conversation starts per second times the turns a conversation
        has on average in this workload (its draws, after the context cap)."""
        return self.conversation_qps * self._requests_per_conversation

    def scaled(self, factor: float) -> "ConversationWorkload":
        if not factor > 0:
            raise WorkloadError(f"qps scale factor {factor!r} is invalid: use a number > 0")
        return replace(self, conversation_qps=self.conversation_qps * factor, think_time_s=self.think_time_s / factor)

    def generate(self) -> Workload:
        """Every turn of every conversation, in arrival order, with prompt_token_ids,
        output_token_ids and turn set. Deterministic in the fields; conversation c draws from its
        own stream, so the rate changes nothing but the start times."""
        starts = np.cumsum(np.random.default_rng([self.seed, 0]).standard_exponential(self.num_conversations))
        starts = (starts - starts[0]) / self.conversation_qps  # the first conversation starts at 0
        header_rng = np.random.default_rng([self.seed, 1])
        headers = [header_rng.integers(_TOKEN_LOW, _TOKEN_HIGH, self.system_prompt_tokens).tolist()
                   for _ in range(self.num_system_prompts)]
        requests: Workload = []
        for c in range(self.num_conversations):
            rng = np.random.default_rng([self.seed, 2, c])
            history = list(headers[int(rng.integers(self.num_system_prompts))])
            num_turns = int(self.turns.sample(rng, 1)[0])
            users = self.user_tokens.sample(rng, num_turns).tolist()
            answers = self.output_tokens.sample(rng, num_turns).tolist()
            gaps = (rng.standard_exponential(num_turns) * self.think_time_s).tolist()
            t = float(starts[c])
            for k in range(num_turns):
                if len(history) + users[k] + answers[k] > self.max_context_tokens:
                    break
                history += rng.integers(_TOKEN_LOW, _TOKEN_HIGH, users[k]).tolist()
                answer = tuple(rng.integers(_TOKEN_LOW, _TOKEN_HIGH, answers[k]).tolist())
                requests.append(WorkloadRequest(t, len(history), answers[k], self.slo_class, tuple(history),
                                                answer, k))
                history += answer
                t += gaps[k]
        requests.sort(key=lambda r: r.arrival_time_s)
        return requests


def shareable_prompt_tokens(workload: Workload, block_size: int) -> int:
    """The prompt tokens an unbounded prefix cache could serve over `workload`, in arrival order,
    if every earlier request had finished before a later one arrived: for each request, the
    longest run of its full prompt blocks, from the first and leaving its last token to compute,
    that some earlier request computed (its prompt and all of its outputs but the last, in full
    blocks). Requests without prompt_token_ids share nothing. Exact (a trie over block contents,
    no hashing), so it can check what the cache found."""
    children: dict[tuple[int, tuple[int, ...]], int] = {}  # (parent node, block tokens) -> node
    total = 0
    for r in workload:
        if r.prompt_token_ids is None:
            continue
        prompt = r.prompt_token_ids
        node, hit = 0, 0
        for i in range((len(prompt) - 1) // block_size):
            node = children.get((node, prompt[i * block_size:(i + 1) * block_size]), -1)
            if node < 0:
                break
            hit += 1
        total += hit * block_size
        computed = prompt + (r.output_token_ids or ())[:-1]
        node = 0
        for i in range(len(computed) // block_size):
            key = (node, computed[i * block_size:(i + 1) * block_size])
            node = children.setdefault(key, len(children) + 1)
    return total
