"""JSON mode in the sampler: whatever the logits, every output is a prefix of one JSON object and
the stop token comes only once the object is complete."""

import json

import pytest
import torch

from adaptive_sarathi.engine.batch import SamplingHistory
from adaptive_sarathi.engine.json_mode import JSONMode
from adaptive_sarathi.engine.json_prefix import JSONPrefix
from adaptive_sarathi.engine.sampler import sample
from adaptive_sarathi.engine.sampling_params import SamplingParams

EOS = 0
# A toy vocabulary: EOS, every printable ASCII byte and a few multi-byte pieces, valid or not.
PIECES = [None] + [bytes([b]) for b in range(0x20, 0x7f)] + [
    b'{"', b'":', b'"}', b'", "', b"true", b"null", b"\n  ", b"\xc3\xa9", b"\xe2\x82", b"\xac", b"\xff", b"1.5e3"]
MODE = JSONMode(PIECES)


def generate(params: SamplingParams, seed: int, steps: int = 150) -> tuple[bytes, bool]:
    gen = torch.Generator().manual_seed(seed)
    outputs: list[int] = []
    history = SamplingHistory([1, 2], outputs, (EOS,), MODE)
    for _ in range(steps):
        logits = torch.randn(1, len(PIECES), generator=gen) * 3
        logits[0, EOS] += 2.0  # the model would like to stop early
        token = sample(logits, [params], [len(outputs)], gen, [history])[0]
        if token == EOS:
            return b"".join(PIECES[t] for t in outputs), True
        outputs.append(token)
    return b"".join(PIECES[t] for t in outputs), False


@pytest.mark.parametrize("params", [SamplingParams(max_tokens=500, temperature=1.0, json_object=True),
                                    SamplingParams(max_tokens=500, temperature=0.7, top_k=20, seed=3,
                                                   json_object=True),
                                    SamplingParams(max_tokens=500, json_object=True)])
def test_outputs_are_json_object_prefixes_ended_only_when_complete(params):
    stopped = 0
    for seed in range(25):
        text, ended = generate(params, seed)
        if ended:
            stopped += 1
            assert isinstance(json.loads(text.decode("utf-8")), dict), text
        else:
            assert JSONPrefix().feed(text), text  # cut at the step limit: still a prefix
    assert stopped > 0


def test_seeded_json_mode_is_reproducible():
    p = SamplingParams(max_tokens=500, temperature=1.0, seed=11, json_object=True)
    assert generate(p, 0) == generate(p, 0)
