"""/health answers 200 while serving and 503 once the engine has died; requests then get errors
instead of hanging, and the serving process exits non-zero."""

import asyncio
import socket

from aiohttp import ClientSession

from adaptive_sarathi.engine.factory import EngineArgs, create_engine
from adaptive_sarathi.server import ServerArgs
from adaptive_sarathi.server.server import serve as serve_until_stopped




def test_health_turns_503_when_the_engine_dies(serve):
    with serve() as server:
        status, _, body = server.request("GET", "/health")
        assert (status, body) == (200, {"status": "ok"})

        def broken_step():
            raise RuntimeError("device lost")

        server.engine.step = broken_step  # the engine thread calls it on the next request
        status, _, body = server.request("POST", "/v1/completions", {"prompt": [1, 2], "max_tokens": 2})
        assert status == 500 and "device lost" in body["error"]["message"]
        status, _, body = server.request("GET", "/health")
        assert status == 503 and body == {"status": "engine failed"}
        status, _, body = server.request("POST", "/v1/completions", {"prompt": [1, 2], "max_tokens": 2})
        assert status == 503 and "engine failed" in body["error"]["message"]
        assert server.server.engine.failed.is_set()
        assert server.request("GET", "/metrics")[0] == 200


def test_serve_returns_false_when_the_engine_dies():
    """serve() (what `adaptive-sarathi serve` runs) ends on its own when the engine thread dies,
    reporting failure, instead of answering 503s until someone restarts it."""
    engine = create_engine(EngineArgs(model="dummy:tiny", num_kv_blocks=64))

    def broken_step():
        raise RuntimeError("device lost")

    engine.step = broken_step

    with socket.socket() as probe:  # a free loopback port for the server to take
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    async def scenario():
        task = asyncio.ensure_future(serve_until_stopped(engine, ServerArgs(port=port), "tiny"))
        await asyncio.sleep(0.5)  # the server is up and idle: the engine thread blocks on its inbox
        assert not task.done()
        # Any request wakes the engine thread, whose next step fails.
        async with ClientSession() as session:
            async with session.post(f"http://127.0.0.1:{port}/v1/completions",
                                    json={"prompt": [1, 2], "max_tokens": 2}) as response:
                assert response.status == 500
        return await asyncio.wait_for(task, timeout=30)

    assert asyncio.run(scenario()) is False
