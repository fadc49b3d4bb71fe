"""prepare_inputs is a pure function: exact positions, slots, tables and sampling rows."""

import pytest
import torch

from adaptive_sarathi.engine.batch import ScheduledBatch, ScheduledChunk
from adaptive_sarathi.engine.input_prep import prepare_inputs
from adaptive_sarathi.engine.sampling_params import SamplingParams

P = SamplingParams()


def chunk(rid, tokens, start, table, sample, prefill):
    return ScheduledChunk(rid, tuple(tokens), start, tuple(table), sample, P, 0, prefill)


def test_mixed_batch_layout():
    batch = ScheduledBatch([
        chunk("p", [1, 2, 3, 4, 5], 6, [9, 2, 7], sample=False, prefill=True),  # positions 6..10
        chunk("d", [42], 4, [3, 8], sample=True, prefill=False),  # position 4
        chunk("q", [7, 8], 0, [5], sample=True, prefill=True),  # a whole short prompt
    ])
    x = prepare_inputs(batch, block_size=4)
    # Single-token chunks first, then the others in schedule order.
    assert x.input_ids.tolist() == [42, 1, 2, 3, 4, 5, 7, 8]
    assert x.positions.tolist() == [4, 6, 7, 8, 9, 10, 0, 1]
    # position p of a request lives at table[p // 4] * 4 + p % 4
    assert x.attention.slot_mapping.tolist() == [8 * 4 + 0, 2 * 4 + 2, 2 * 4 + 3, 7 * 4 + 0, 7 * 4 + 1, 7 * 4 + 2,
                                                 5 * 4 + 0, 5 * 4 + 1]
    assert x.attention.num_decode_tokens == 1
    assert x.attention.decode_block_tables.tolist() == [[3, 8]]
    assert x.attention.decode_context_lens.tolist() == [5]
    spans = [(s.q_start, s.q_end, s.start_position, s.block_table.tolist()) for s in x.attention.prefills]
    assert spans == [(1, 6, 6, [9, 2, 7]), (6, 8, 0, [5])]
    # "p" does not sample (its chunk ends mid-prompt); "d" and "q" sample from their last rows.
    assert x.output_rows.tolist() == [0, 7]
    assert [c.request_id for c in x.sample_chunks] == ["d", "q"]
    # The one-launch layout, built on the host with the spans: rows q_start, q_len, start; tables
    # padded with 0.
    layout = x.attention.prefill_layout
    assert layout.spans.tolist() == [[1, 6], [5, 2], [6, 0]]
    assert layout.block_tables.tolist() == [[9, 2, 7], [5, 0, 0]]
    assert (layout.num_rows, layout.max_q_len, layout.max_context_len) == (7, 5, 11)


def test_moved_inputs_keep_every_tensor_and_share_the_layout_tables():
    x = prepare_inputs(ScheduledBatch([chunk("d", [42], 4, [3, 8], True, False),
                                       chunk("p", [1, 2, 3], 0, [6], True, True),
                                       chunk("q", [4] * 9, 0, [1, 2, 5], True, True)]), block_size=4)
    copies = [t.clone() for t in x.tensors()]
    moved = x.with_tensors(copies)
    assert all(a is b for a, b in zip(moved.tensors(), copies))
    assert [torch.equal(a, b) for a, b in zip(moved.tensors(), x.tensors())] == [True] * len(copies)
    # Each span's table is a view of the new layout's, not a copy of the old one.
    copies[-1][0, 0] = 99
    assert moved.attention.prefills[0].block_table.tolist() == [99]
    assert moved.attention.prefills[1].block_table.tolist() == [1, 2, 5]
    assert [c.request_id for c in moved.sample_chunks] == ["d", "p", "q"]


def test_decode_tables_are_padded():
    batch = ScheduledBatch([chunk("a", [1], 0, [4], True, True), chunk("b", [2], 9, [1, 2, 3], True, False)])
    x = prepare_inputs(batch, block_size=4)
    assert x.attention.decode_block_tables.tolist() == [[4, 0, 0], [1, 2, 3]]
    assert x.attention.max_decode_context_len == 10
    assert x.attention.decode_block_tables.dtype == torch.int32


def test_short_block_table_is_rejected():
    with pytest.raises(ValueError, match="block table"):
        prepare_inputs(ScheduledBatch([chunk("a", [1, 2], 3, [0], True, True)]), block_size=4)
