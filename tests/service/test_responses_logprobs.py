"""The logprobs of response chunks: OpenAI's two shapes, joined by collect, and -inf shown as
vLLM shows it (JSON has no infinity)."""

import asyncio
import json
import math

from adaptive_sarathi.engine.batch import TokenLogprobs
from adaptive_sarathi.engine.outputs import RequestOutput
from adaptive_sarathi.engine.request import FinishReason, RequestTimeline
from adaptive_sarathi.server.responses import ResponseHeader, collect, stream_chunks


class FakeStream:
    def __init__(self, items):
        self.items = list(items)

    def __aiter__(self):
        return self

    async def __anext__(self):
        if not self.items:
            raise StopAsyncIteration
        return self.items.pop(0)


def output(token, text, logprob, top, finished=False):
    return RequestOutput("r", [1, 2], [token], [token], text, text, finished,
                         FinishReason.LENGTH if finished else None, RequestTimeline(0.0),
                         new_logprobs=[TokenLogprobs(token, logprob, top)])


def run(chat):
    header = ResponseHeader(chat, "m", token_text=lambda t: f"<{t}>")
    items = [(0, output(5, "a", -0.5, [(5, -0.5), (6, -1.5)])),
             (0, output(7, "b", -math.inf, [(5, -0.1), (6, -2.0)], finished=True))]
    return asyncio.run(collect(header, stream_chunks(header, FakeStream(items), include_usage=True)))


def test_completions_shape_joined_over_chunks():
    lp = run(chat=False)["choices"][0]["logprobs"]
    assert lp == {"tokens": ["<5>", "<7>"], "token_logprobs": [-0.5, -9999.0],
                  "top_logprobs": [{"<5>": -0.5, "<6>": -1.5}, {"<5>": -0.1, "<6>": -2.0, "<7>": -9999.0}],
                  "text_offset": [0, 3]}


def test_chat_shape_and_valid_json():
    reply = run(chat=True)
    content = reply["choices"][0]["logprobs"]["content"]
    assert [(e["token"], e["logprob"], e["bytes"]) for e in content] == [("<5>", -0.5, [60, 53, 62]),
                                                                          ("<7>", -9999.0, [60, 55, 62])]
    assert [t["token"] for t in content[1]["top_logprobs"]] == ["<5>", "<6>"]
    json.loads(json.dumps(reply, allow_nan=False))
