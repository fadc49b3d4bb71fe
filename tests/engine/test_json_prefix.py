"""JSONPrefix against the json module: every prefix of a JSON object's text is accepted and the
whole text is complete; a byte string it accepts as complete parses as an object; mutations the
json module refuses are refused at some byte or left incomplete."""

import json
import random

import pytest

from adaptive_sarathi.engine.json_prefix import JSONPrefix


def random_value(rng: random.Random, depth: int = 0):
    kind = rng.randrange(8 if depth < 4 else 5)
    if kind == 0:
        return rng.choice([True, False, None])
    if kind == 1:
        return rng.randint(-10 ** 6, 10 ** 6)
    if kind == 2:
        return rng.choice([0.5, -1e-7, 3.25e12, 1.0, -0.0, 123.456])
    if kind in (3, 4):
        return "".join(rng.choice('ab "\\\n\t/é€😀\x01z') for _ in range(rng.randrange(6)))
    if kind in (5, 6):
        return {"k" + str(i) + rng.choice(["", "é", '"']): random_value(rng, depth + 1) for i in range(rng.randrange(4))}
    return [random_value(rng, depth + 1) for _ in range(rng.randrange(4))]


def _no_constants(name):
    raise ValueError(f"{name} is not JSON")  # Python's json takes NaN and Infinity; RFC 8259 does not


def is_object_text(text: bytes) -> bool:
    try:
        # Strict UTF-8 first: json.loads(bytes) lets surrogates through ("surrogatepass").
        return isinstance(json.loads(text.decode("utf-8"), parse_constant=_no_constants), dict)
    except ValueError:
        return False


def accepts(text: bytes) -> JSONPrefix | None:
    state = JSONPrefix()
    return state if state.feed(text) else None


def documents(count: int, seed: int = 0):
    rng = random.Random(seed)
    for _ in range(count):
        obj = {f"key{i}": random_value(rng) for i in range(rng.randrange(5))}
        indent = rng.choice([None, 2])
        yield (" " * rng.randrange(2) + json.dumps(obj, ensure_ascii=rng.random() < 0.5, indent=indent)
               + "\n" * rng.randrange(2)).encode()


def test_every_prefix_of_an_object_is_accepted_and_the_whole_is_complete():
    for text in documents(300):
        state = JSONPrefix()
        for i, byte in enumerate(text):
            assert state.feed(bytes([byte])), (text, i)
        assert state.complete, text


@pytest.mark.parametrize("text", [b"[1]", b"1", b'"x"', b"{,}", b'{"a" 1}', b'{"a":01}', b'{"a":1,}', b'{"a":.5}',
                                  b'{"a":tru}', b'{"a":1}}', b'{"a":1} x', b'{"a":"\x01"}', b'{"a":"\\x"}',
                                  b'{"a":"\xff"}', b'{"a":1.}', b'{"a":1e}', b'{"a":-}', b"{'a':1}", b'{"a":[1,]}',
                                  b'{"a":NaN}', b'{"a":"\\u12g4"}', b'{"a":"\xe0\x80\x80"}', b'{"a":"\xed\xa0\x80"}',
                                  b'{"a":"\xf4\x90\x80\x80"}', b'{"a":"\xc3"}'])
def test_invalid_texts_are_refused(text):
    state = accepts(text)
    assert state is None or not state.complete, text
    assert not is_object_text(text)


def test_what_it_completes_parses_as_an_object():
    """Random byte mutations of object texts: whatever JSONPrefix takes as a complete object, the
    json module parses as one; what it refuses or leaves open, json refuses."""
    rng = random.Random(1)
    alphabet = b'{}[]":,0123456789-+.eEtrufalsn \\x\xc3\xa9\xe2\x82\xac\xf0\x9f'
    checked = 0
    for text in documents(400, seed=2):
        for _ in range(5):
            mutated = bytearray(text)
            for _ in range(rng.randrange(1, 3)):
                at = rng.randrange(len(mutated))
                op = rng.randrange(3)
                if op == 0:
                    mutated[at] = rng.choice(alphabet)
                elif op == 1:
                    del mutated[at]
                else:
                    mutated.insert(at, rng.choice(alphabet))
            state = accepts(bytes(mutated))
            assert (state is not None and state.complete) == is_object_text(bytes(mutated)), bytes(mutated)
            checked += 1
    assert checked == 2000


def test_copy_is_independent():
    state = JSONPrefix()
    assert state.feed(b'{"a": [1, ')
    trial = state.copy()
    assert not trial.feed(b"}")
    assert state.feed(b"2]}") and state.complete
