"""/health answers 200 while serving and 503 once the engine has died; requests then get errors
instead of hanging."""


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
        assert status == 500 and body["error"]["type"] == "internal_error"
        assert server.request("GET", "/metrics")[0] == 200
