"""CORS: off by default; with origins allowed, preflights are answered (before authentication)
and responses, streamed ones too, carry Access-Control-Allow-Origin for an allowed origin only."""

import pytest

from adaptive_sarathi.server.cors import CORSConfig

COMPLETIONS = "/v1/completions"
BODY = {"prompt": [1, 2, 3], "max_tokens": 3, "ignore_eos": True}
APP = "https://app.example"
KEY = {"Authorization": "Bearer k"}


def preflight(server, origin, method="POST", headers="authorization, content-type"):
    return server.request("OPTIONS", COMPLETIONS, headers={
        "Origin": origin, "Access-Control-Request-Method": method, "Access-Control-Request-Headers": headers})


@pytest.fixture(scope="module")
def server(serve):
    cors = CORSConfig(allowed_origins=(APP,), allowed_methods=("GET", "POST"),
                      allowed_headers=("Authorization", "Content-Type"), allow_credentials=True)
    with serve(api_key="k", cors=cors) as s:
        yield s


def test_preflight_of_an_allowed_origin_needs_no_key(server):
    status, headers, _ = preflight(server, APP)
    assert status == 200
    assert headers["Access-Control-Allow-Origin"] == APP
    assert headers["Access-Control-Allow-Methods"] == "GET, POST"
    assert headers["Access-Control-Allow-Headers"] == "Authorization, Content-Type"
    assert headers["Access-Control-Allow-Credentials"] == "true"
    assert int(headers["Access-Control-Max-Age"]) > 0


@pytest.mark.parametrize("origin,method,asked,word", [
    ("https://evil.example", "POST", "content-type", "origin"),
    (APP, "DELETE", "content-type", "method"),
    (APP, "POST", "x-custom", "headers")])
def test_preflight_refuses_what_is_not_allowed(server, origin, method, asked, word):
    status, headers, body = preflight(server, origin, method, asked)
    assert status == 400 and word in body
    assert "Access-Control-Allow-Origin" not in headers


def test_responses_carry_the_origin_for_an_allowed_one_only(server):
    status, headers, _ = server.request("POST", COMPLETIONS, BODY, headers={**KEY, "Origin": APP})
    assert status == 200 and headers["Access-Control-Allow-Origin"] == APP and "Origin" in headers["Vary"]
    status, headers, _ = server.request("POST", COMPLETIONS, BODY, headers={**KEY, "Origin": "https://evil.example"})
    assert status == 200 and "Access-Control-Allow-Origin" not in headers
    # Errors and streams too: a browser can read why it was refused, and read a stream.
    status, headers, _ = server.request("POST", COMPLETIONS, BODY, headers={"Origin": APP})
    assert status == 401 and headers["Access-Control-Allow-Origin"] == APP
    conn, response = server.open_stream(BODY, headers={**KEY, "Origin": APP})
    assert response.status == 200 and response.getheader("Access-Control-Allow-Origin") == APP
    response.read()
    conn.close()


def test_off_by_default(serve):
    with serve() as plain:
        status, headers, _ = preflight(plain, APP)
        assert status == 405 and "Access-Control-Allow-Origin" not in headers
        status, headers, _ = plain.request("POST", COMPLETIONS, BODY, headers={"Origin": APP})
        assert status == 200 and "Access-Control-Allow-Origin" not in headers


def test_wildcard_answers_star_without_credentials(serve):
    with serve(cors=CORSConfig(allowed_origins=("*",))) as open_server:
        status, headers, _ = preflight(open_server, "https://any.example", headers="x-anything")
        assert status == 200 and headers["Access-Control-Allow-Origin"] == "*"
        assert headers["Access-Control-Allow-Headers"] == "x-anything"
        assert "Access-Control-Allow-Credentials" not in headers
