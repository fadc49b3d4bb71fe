"""Token choice per request: penalties and min_tokens on the logits, then greedy, or temperature
with top-k / top-p / min-p, optionally seeded; and the log-probabilities a request asks for.

All rows are sampled together on the logits' device and the tokens come back in one copy: a
per-row loop costs several kernel launches and a device sync per sampling row (2.4 ms of host time
per step at 64 rows, on a CPU).
"""

from __future__ import annotations

import logging

import torch

from adaptive_sarathi.engine.batch import SamplingHistory, TokenLogprobs
from adaptive_sarathi.engine.sampling_params import SamplingParams

logger = logging.getLogger(__name__)

_SEED_STRIDE = 1_000_003  # a prime, so (seed, output index) pairs map to distinct streams


def sample(logits: torch.Tensor, params: list[SamplingParams], num_output_tokens: list[int],
           generator: torch.Generator | None = None,
           histories: list[SamplingHistory | None] | None = None) -> list[int]:
    """One token id per row of logits [N, vocab].

    Rows whose params have penalties or min_tokens read their row of `histories` (which must then
    be given, not None, for those rows); rows without them cost nothing extra. A seeded request's
    draw is a hash of (seed, number of outputs so far), so its tokens depend neither on batch
    composition nor on preemption. Unseeded requests draw from `generator` (on the logits'
    device). logits are not modified.
    """
    logits = logits.float()
    adjusted = [i for i, p in enumerate(params) if p.needs_history]
    if adjusted:
        logits = logits.clone()  # the caller's logits stay as they came (logprobs read them)
        _adjust(logits, adjusted, params, num_output_tokens, histories)
    tokens = logits.argmax(dim=-1)
    rows = [i for i, p in enumerate(params) if not p.greedy]
    if rows:
        index = torch.tensor(rows, device=logits.device)
        tokens[index] = _draw(logits[index], [params[i] for i in rows], [num_output_tokens[i] for i in rows],
                              generator)
    chosen = tokens.tolist()
    for i in (i for i in adjusted if params[i].json_object):
        chosen[i] = _json_token(logits[i], chosen[i], params[i], num_output_tokens[i], histories[i], generator)
    return chosen


def _draw(logits: torch.Tensor, params: list[SamplingParams], num_output_tokens: list[int],
          generator: torch.Generator | None) -> torch.Tensor:
    """Token ids [S] drawn from the filtered, tempered softmax of each row of logits [S, vocab]:
    inverse transform sampling, one uniform per row against the row's cumulative probabilities
    (in descending order of probability when a row has a top-p filter, whose nucleus is then a
    prefix)."""
    x = logits / _column([p.temperature for p in params], x_like=logits)
    x = _top_k(x, [p.top_k if 0 < p.top_k < x.shape[-1] else 0 for p in params])
    if any(p.min_p > 0.0 for p in params):
        x = _min_p(x, _column([p.min_p for p in params], x_like=x))
    order = None
    if any(p.top_p < 1.0 for p in params):
        x, order = x.sort(dim=-1, descending=True)
    cdf = torch.softmax(x, dim=-1).double().cumsum(dim=-1)
    # The last token that may be drawn: the last one left by top-k, or the first whose cumulative
    # probability reaches top_p (the smallest such prefix, at least the top token).
    last = x.shape[-1] - 1 - torch.isfinite(x).flip(-1).int().argmax(dim=-1)
    if order is not None:
        # Rows without the filter search past any total (a float sum may end a hair over 1).
        top_p = _column([p.top_p if p.top_p < 1.0 else 2.0 for p in params], x_like=cdf)
        last = torch.minimum(last, torch.searchsorted(cdf, top_p)[:, 0])
    uniform = torch.rand(len(params), dtype=torch.float64, device=x.device, generator=generator)
    seeded = [i for i, p in enumerate(params) if p.seed is not None]
    if seeded:
        draws = [_seeded_uniform(params[i].seed * _SEED_STRIDE + num_output_tokens[i]) for i in seeded]
        uniform[torch.tensor(seeded, device=x.device)] = torch.tensor(draws, dtype=torch.float64, device=x.device)
    # The first token whose cumulative probability passes the draw, scaled to the kept mass.
    # Filtered tokens add nothing to the sum, so none is the first to pass it; a draw that rounds
    # up to the total would land past the kept tokens: min() keeps it on the last.
    kept_mass = cdf.gather(1, last[:, None])
    token = torch.minimum(torch.searchsorted(cdf, uniform[:, None] * kept_mass, right=True)[:, 0], last)
    return token if order is None else order.gather(1, token[:, None])[:, 0]


_JSON_REDRAWS = 16  # refused draws before the whole vocabulary is checked
_REDRAW_STRIDE = 1 << 32  # seeded redraw k of output n keys its draw by n + k * stride: a fresh stream


def _json_token(row: torch.Tensor, token: int, params: SamplingParams, num_output_tokens: int,
                history: SamplingHistory, generator: torch.Generator | None) -> int:
    """`token` if JSON mode allows it after the request's outputs, else a redraw from `row` (the
    adjusted logits) with every refused token masked: drawing again with the refused ones removed
    samples the row's distribution restricted to the allowed tokens (greedy: the best allowed one;
    top-k, top-p and min-p apply to what is left). After _JSON_REDRAWS refusals every token is
    checked and only allowed ones are left. Stop ids end nothing before min_tokens."""
    mode = history.json
    state = mode.state_of(history.output_token_ids)
    stops = history.stop_ids if num_output_tokens >= params.min_tokens else ()
    if mode.allows(state, token, stops):
        return token
    row = row.clone()
    for attempt in range(1, _JSON_REDRAWS + 2):
        if attempt <= _JSON_REDRAWS:
            row[token] = float("-inf")
        else:
            allowed = mode.allowed(state, row.shape[-1], stops)
            if not allowed:
                # Unreachable while every output came through `allows` (whitespace always may
                # follow); were it reached, ending the request beats stopping the engine.
                logger.error("JSON mode: no token continues an output; ending it")
                return history.stop_ids[0] if history.stop_ids else token
            keep = torch.full_like(row, float("-inf"))
            index = torch.tensor(allowed, device=row.device)
            keep[index] = row[index]
            row = keep
            if not torch.isfinite(row).any():
                row[index] = 0.0  # every allowed token had probability 0: choose among them evenly
        if params.greedy:
            token = int(row.argmax())
        else:
            token = int(_draw(row[None], [params], [num_output_tokens + attempt * _REDRAW_STRIDE], generator)[0])
        if attempt > _JSON_REDRAWS or mode.allows(state, token, stops):
            return token
    raise AssertionError("unreachable")


def _adjust(logits: torch.Tensor, rows: list[int], params: list[SamplingParams], num_output_tokens: list[int],
            histories: list[SamplingHistory | None] | None) -> None:
    """Apply min_tokens and the penalties (vLLM's order: min_tokens, then repetition, frequency
    and presence) to `rows` of logits, in place."""
    if histories is None or any(histories[i] is None for i in rows):
        raise ValueError("rows with penalties or min_tokens need their SamplingHistory")
    device, vocab = logits.device, logits.shape[-1]
    masked = [(i, t) for i in rows if num_output_tokens[i] < params[i].min_tokens
              for t in histories[i].stop_ids if t < vocab]
    if masked:
        r, t = zip(*masked)
        logits[torch.tensor(r, device=device), torch.tensor(t, device=device)] = float("-inf")
    penalized = [i for i in rows if params[i].has_penalties]
    if not penalized:
        return
    index = torch.tensor(penalized, device=device)
    x = logits[index]
    outputs = _counts([histories[i].output_token_ids for i in penalized], vocab, device)
    if any(params[i].repetition_penalty != 1.0 for i in penalized):  # decided on the host: no device sync
        repetition = _column([params[i].repetition_penalty for i in penalized], x_like=x)
        seen = (_counts([histories[i].prompt_token_ids for i in penalized], vocab, device) + outputs) > 0
        x = torch.where(seen, torch.where(x > 0, x / repetition, x * repetition), x)
    x = x - _column([params[i].frequency_penalty for i in penalized], x_like=x) * outputs
    x = x - _column([params[i].presence_penalty for i in penalized], x_like=x) * (outputs > 0)
    logits[index] = x


def _counts(token_lists: list[list[int]], vocab: int, device: torch.device) -> torch.Tensor:
    """[len(token_lists), vocab] float counts of each token id per list (ids >= vocab dropped):
    one scatter over all lists, each id offset by its row."""
    width = vocab + 1  # a spill column for out-of-vocabulary ids
    counts = torch.zeros(len(token_lists) * width, device=device)
    lengths = [len(ids) for ids in token_lists]
    if sum(lengths):
        ids = torch.tensor([t for ids in token_lists for t in ids], dtype=torch.int64).clamp_(max=vocab)
        rows = torch.repeat_interleave(torch.arange(len(token_lists)), torch.tensor(lengths))
        flat = (rows * width + ids).to(device, non_blocking=True)
        counts.index_add_(0, flat, torch.ones(len(flat), device=device))
    return counts.view(len(token_lists), width)[:, :vocab]


def logprobs(logits: torch.Tensor, tokens: list[int], num_top: list[int | None]) -> list[TokenLogprobs | None]:
    """Per row of logits [N, vocab]: None where num_top is None, else the TokenLogprobs of
    `tokens[row]` under the log-softmax of the row as given (the raw model logits) with its
    num_top most likely tokens. One top-k over the rows that ask; logits are not modified."""
    rows = [i for i, k in enumerate(num_top) if k is not None]
    out: list[TokenLogprobs | None] = [None] * len(tokens)
    if not rows:
        return out
    index = torch.tensor(rows, device=logits.device)
    lp = torch.log_softmax(logits[index].float(), dim=-1)
    chosen = lp.gather(1, torch.tensor([tokens[i] for i in rows], device=lp.device)[:, None])[:, 0].tolist()
    k = max(num_top[i] for i in rows)
    top_values, top_ids = (lp.topk(k, dim=-1) if k else (lp[:, :0], lp[:, :0].long()))
    top_values, top_ids = top_values.tolist(), top_ids.tolist()
    for j, i in enumerate(rows):
        kk = num_top[i]
        out[i] = TokenLogprobs(tokens[i], chosen[j], list(zip(top_ids[j][:kk], top_values[j][:kk])))
    return out


def _top_k(x: torch.Tensor, top_k: list[int]) -> torch.Tensor:
    """x with every entry below its row's k-th largest set to -inf; rows with k = 0 unchanged."""
    if not any(top_k):
        return x
    k = _column(top_k, x_like=x, dtype=torch.int64)
    kth = torch.topk(x, max(top_k), dim=-1).values.gather(1, (k - 1).clamp(min=0))
    return x.masked_fill((x < kth) & (k > 0), float("-inf"))


def _min_p(x: torch.Tensor, min_p: torch.Tensor) -> torch.Tensor:
    """x with every token whose tempered probability is below min_p times its row's top
    probability set to -inf (vLLM's definition); compared in log space: p_i < m * p_max
    <=> x_i - x_max < log m, so no softmax is needed. Rows with min_p 0 keep everything."""
    return x.masked_fill(x - x.max(dim=-1, keepdim=True).values < min_p.log(), float("-inf"))


def _column(values: list, x_like: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    return torch.tensor(values, dtype=dtype or x_like.dtype).to(x_like.device, non_blocking=True)[:, None]


def _seeded_uniform(key: int) -> float:
    """A uniform in [0, 1) that depends on key alone: splitmix64's output mixer, top 53 bits."""
    mask = (1 << 64) - 1
    x = (key * 0x9E3779B97F4A7C15) & mask
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & mask
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & mask
    return ((x ^ (x >> 31)) >> 11) * 2.0 ** -53
