"""The step shapes a latency profile measures, and the named grids of them."""

from __future__ import annotations

from dataclasses import dataclass

from adaptive_sarathi.engine.latency.shape import StepShape


@dataclass(frozen=True)
class ProfileShape:
    """One synthetic step: `num_decodes` decodes, each attending `decode_context_len` tokens (its new
    token included), plus prefill chunks given as (num_tokens, prefix_tokens): a chunk of num_tokens
    prompt tokens after a cached prefix of prefix_tokens. Raises ValueError naming a bad field."""

    num_decodes: int = 0
    decode_context_len: int = 0
    prefill_chunks: tuple[tuple[int, int], ...] = ()

    def __post_init__(self) -> None:
        if self.num_decodes < 0:
            raise ValueError(f"num_decodes={self.num_decodes!r} is invalid: use an integer >= 0")
        if self.num_decodes and self.decode_context_len < 1:
            raise ValueError(f"decode_context_len={self.decode_context_len!r} is invalid: decodes attend >= 1 token")
        for tokens, prefix in self.prefill_chunks:
            if tokens < 1 or prefix < 0:
                raise ValueError(f"prefill chunk ({tokens}, {prefix}) is invalid: use num_tokens >= 1, prefix >= 0")
        if not self.num_decodes and not self.prefill_chunks:
            raise ValueError("a profile shape needs at least one decode or one prefill chunk")

    @property
    def num_tokens(self) -> int:
        return self.num_decodes + sum(tokens for tokens, _ in self.prefill_chunks)

    @property
    def max_context_len(self) -> int:
        """The longest context any sequence of the step attends, in tokens."""
        contexts = [tokens + prefix for tokens, prefix in self.prefill_chunks]
        return max(contexts + ([self.decode_context_len] if self.num_decodes else []))

    @property
    def prefix_tokens(self) -> int:
        """Cached prefix tokens summed over the prefill chunks."""
        return sum(prefix for _, prefix in self.prefill_chunks)

    def num_blocks(self, block_size: int) -> int:
        """KV blocks the step's sequences hold together (each sequence rounds up on its own)."""
        decode_blocks = self.num_decodes * -(-self.decode_context_len // block_size)
        return decode_blocks + sum(-(-(tokens + prefix) // block_size) for tokens, prefix in self.prefill_chunks)

    def step_shape(self) -> StepShape:
        prefill_tokens = sum(tokens for tokens, _ in self.prefill_chunks)
        context = self.num_decodes * self.decode_context_len + prefill_tokens + self.prefix_tokens
        return StepShape(num_prefill_tokens=prefill_tokens, num_decode_tokens=self.num_decodes,
                         num_prefill_seqs=len(self.prefill_chunks), sum_context_tokens=context,
                         decode_context_tokens=self.num_decodes * self.decode_context_len)


GRID_NAMES = ("quick", "full")


def profile_grid(name: str) -> list[ProfileShape]:
    """The shapes of grid `name` ("quick" or "full"), without duplicates, in a fixed order.

    Both cover prefill-only chunks up to 8192 tokens (with the GEMM tile neighbours 512/520,
    1024/1040, 2048/2064, where a step in cost shows), decode-only steps of 1..256 sequences at
    contexts 512..8192, chunks after a cached prefix, decodes mixed with a chunk under a token
    budget, and several chunks in one step. Shapes whose KV cache does not fit are the caller's to
    skip. Raises ValueError for an unknown name.
    """
    if name == "quick":
        prefill = [1, 16, 64, 128, 256, 384, 512, 520, 768, 1024, 1040, 1536, 2048, 2064, 3072, 4096, 6144, 8192]
        decodes, contexts = [1, 8, 32, 64, 128, 256], [512, 2048, 8192]
        prefix_chunks, prefixes = [512, 2048], [1024, 4096]
        budgets, mixed_decodes, mixed_contexts = [512, 2048], [32, 64, 128], [2048]
        multi = [(4, 128), (2, 512), (4, 512), (2, 1024)]
    elif name == "full":
        neighbours = [n + d for n in (256, 512, 1024, 2048, 4096) for d in (8, 16)]
        prefill = ([1, 2, 4, 8, 16, 32, 48, 64, 96] + list(range(128, 2049, 128)) + list(range(2560, 8193, 512))
                   + neighbours)
        decodes = [1, 2, 4, 8, 16, 32, 48, 64, 96, 128, 160, 192, 224, 256]
        contexts = [512, 1024, 2048, 4096, 8192]
        prefix_chunks, prefixes = [256, 512, 1024, 2048, 4096], [512, 1024, 2048, 4096]
        budgets, mixed_decodes, mixed_contexts = [256, 512, 1024, 2048, 4096], [8, 32, 64, 128, 256], [512, 2048, 8192]
        multi = [(n, tokens) for n in (2, 4, 8) for tokens in (128, 256, 512, 1024)]
    else:
        raise ValueError(f"grid={name!r} is unknown: use one of {', '.join(GRID_NAMES)}")
    shapes = [ProfileShape(prefill_chunks=((n, 0),)) for n in sorted(prefill)]
    shapes += [ProfileShape(num_decodes=b, decode_context_len=c) for c in contexts for b in decodes]
    shapes += [ProfileShape(prefill_chunks=((n, p),)) for n in prefix_chunks for p in prefixes]
    shapes += [ProfileShape(num_decodes=d, decode_context_len=c, prefill_chunks=((budget - d, 0),))
               for budget in budgets for c in mixed_contexts for d in mixed_decodes if d < budget]
    shapes += [ProfileShape(prefill_chunks=((tokens, 0),) * n) for n, tokens in multi]
    return list(dict.fromkeys(shapes))
