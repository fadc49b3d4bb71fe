"""The aiohttp application: OpenAI routes, health, metrics, authentication and error bodies.

Handlers only parse, move bytes and wait; the engine runs on its own thread (AsyncEngine).
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import yaml
from aiohttp import web

from adaptive_sarathi.controller.slo import SLOPolicy, SLOPolicyError, policy_from_dict
from adaptive_sarathi.engine.engine import InvalidRequestError
from adaptive_sarathi.metrics import ServerMetrics, slo_fields
from adaptive_sarathi.server.async_engine import AsyncEngine
from adaptive_sarathi.server.cors import CORSConfig, add_cors_headers, cors_middleware
from adaptive_sarathi.server.errors import (APIError, EngineDeadError, EngineStoppedError, NoSLOPolicyError,
                                            QueueFullError, RequestFailedError, bad_request)
from adaptive_sarathi.server.protocol import (GenerateRequest, RequestLimits, parse_chat_request,
                                              parse_completion_request)
from adaptive_sarathi.server.request_id import HEADER as REQUEST_ID_HEADER, engine_request_ids, valid_request_id
from adaptive_sarathi.server.responses import ResponseHeader, collect, stream_chunks
from adaptive_sarathi.server.slo_class import HEADER as SLO_CLASS_HEADER, request_class
from adaptive_sarathi.server.tokenize_api import parse_detokenize, parse_tokenize
from adaptive_sarathi.version import package_version

logger = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_ERROR_TYPES = {401: "authentication_error", 404: "not_found_error", 429: "rate_limit_error",
                503: "service_unavailable_error"}


def build_app(engine: AsyncEngine, metrics: ServerMetrics, model_name: str, api_key: str | None = None,
              max_body_bytes: int = 1 << 20, retry_after_s: int = 1,
              limits: RequestLimits = RequestLimits(), slo: SLOPolicy | None = None,
              on_slo_change: Callable[[SLOPolicy], None] | None = None,
              model_aliases: tuple[str, ...] = (), cors: CORSConfig = CORSConfig()) -> web.Application:
    """The application serving `engine` under `model_name`, which requests may also call by any of
    `model_aliases` (vLLM's further --served-model-name values). With `api_key`, every /v1 route
    needs "Authorization: Bearer <api_key>" (the scheme's case is free, as HTTP has it); /health and
    /metrics stay open (for probes and scrapers).
    Bodies over `max_body_bytes` get a 413; requests over `limits` a 400. A generation request's
    SLO class (body `slo_class`, else header x-slo-class, else `slo`'s default_class) must be one
    `slo` declares, else a 400; without `slo` naming any class is a 400. Every refused request
    (4xx) is counted in metrics.request_rejected by reason.

    GET /v1/slo_policy answers the SLO policy in force as a policy document (404 without one);
    PUT /v1/slo_policy replaces it (docs/slo-classes.md), then calls `on_slo_change` with the new
    policy on the event loop. `cors` allows browser origins (off by default; server/cors.py)."""
    routes = _Routes(engine, metrics, (model_name, *model_aliases), retry_after_s, limits, slo, on_slo_change)
    middlewares = [_error_middleware(metrics), _auth_middleware(api_key)]
    if cors.enabled:  # outermost: a preflight needs no API key
        middlewares.insert(0, cors_middleware(cors))
    app = web.Application(client_max_size=max_body_bytes, middlewares=middlewares)
    app.router.add_post("/v1/completions", routes.completions)
    app.router.add_post("/v1/chat/completions", routes.chat_completions)
    app.router.add_get("/v1/models", routes.models)
    app.router.add_get("/v1/models/{model:.+}", routes.model)  # ids may hold "/"
    app.router.add_get("/version", routes.version)
    app.router.add_post("/tokenize", routes.tokenize)
    app.router.add_post("/detokenize", routes.detokenize)
    app.router.add_get("/v1/slo_policy", routes.get_slo_policy)
    app.router.add_put("/v1/slo_policy", routes.put_slo_policy)
    app.router.add_get("/health", routes.health)
    app.router.add_get("/health/live", routes.live)
    app.router.add_get("/metrics", routes.metrics)
    app.on_response_prepare.append(_echo_request_id)
    if cors.enabled:
        app.on_response_prepare.append(functools.partial(add_cors_headers, cors))
    return app


async def _echo_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """Every response, streamed ones included (this runs before the headers go out), carries the
    client's X-Request-Id back, so a client or proxy can match answers to its own logs (a value
    refused by engine_request_ids is not echoed: its 400 says why)."""
    request_id = request.headers.get(REQUEST_ID_HEADER)
    if request_id is not None and valid_request_id(request_id):
        response.headers[REQUEST_ID_HEADER] = request_id


def error_response(err: APIError) -> web.Response:
    return web.json_response(err.body(), status=err.status, headers=err.headers)


def _error_middleware(metrics: ServerMetrics):
    @web.middleware
    async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except APIError as err:
            metrics.observe_rejection(err.status, err.code)
            return error_response(err)
        except web.HTTPException as exc:  # aiohttp's own: unknown route, wrong method, body too large
            if exc.status < 400:
                raise
            metrics.observe_rejection(exc.status)
            message = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else exc.reason
            return error_response(APIError(exc.status, f"{message} ({request.method} {request.path})",
                                           type=_ERROR_TYPES.get(exc.status, "invalid_request_error")))
        except Exception:
            logger.exception("unexpected error on %s %s", request.method, request.path)
            return error_response(APIError(500, "internal server error", type="internal_error"))

    return errors


def _auth_middleware(api_key: str | None):
    expected = (api_key or "").encode()

    @web.middleware
    async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        if api_key is not None and request.path.startswith("/v1"):
            scheme, _, given = request.headers.get("Authorization", "").partition(" ")
            key_ok = hmac.compare_digest(given.strip().encode(), expected)  # constant time: runs whatever the scheme
            if not key_ok or scheme.lower() != "bearer":
                raise APIError(401, "missing or wrong API key: send 'Authorization: Bearer <key>'",
                               type="authentication_error", code="invalid_api_key")
        return await handler(request)

    return auth


class _Routes:
    def __init__(self, engine: AsyncEngine, metrics: ServerMetrics, model_names: tuple[str, ...], retry_after_s: int,
                 limits: RequestLimits, slo: SLOPolicy | None,
                 on_slo_change: Callable[[SLOPolicy], None] | None = None):
        self.engine = engine
        self.limits = limits
        self.slo = slo  # what request classes are checked against; replaced by PUT /v1/slo_policy
        self._on_slo_change = on_slo_change
        self._slo_lock = asyncio.Lock()  # one replacement at a time, applied in arrival order
        self._metrics = metrics
        self.model_names = model_names  # the first is the one responses name
        self.model_name = model_names[0]
        self.retry_after_s = retry_after_s
        self.created = int(time.time())

    async def completions(self, request: web.Request) -> web.StreamResponse:
        arrival = self.engine.clock()
        body = await _read_json(request)
        parsed = parse_completion_request(body, self.engine.max_model_len, self.limits)
        return await self._generate(request, parsed, arrival)

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        arrival = self.engine.clock()
        body = await _read_json(request)
        parsed = parse_chat_request(body, self.engine.tokenizer, self.engine.max_model_len, self.limits)
        return await self._generate(request, parsed, arrival)

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [self._model_card(name) for name in self.model_names]})

    async def model(self, request: web.Request) -> web.Response:
        name = request.match_info["model"]
        self._check_model(name)
        return web.json_response(self._model_card(name))

    async def tokenize(self, request: web.Request) -> web.Response:
        tokenizer = self._tokenizer()
        parsed = parse_tokenize(await _read_json(request), tokenizer, self.limits)
        self._check_model(parsed.model)
        tokens = await asyncio.to_thread(tokenizer.encode, parsed.text, parsed.add_special_tokens)
        return web.json_response({"count": len(tokens), "max_model_len": self.engine.max_model_len, "tokens": tokens})

    async def detokenize(self, request: web.Request) -> web.Response:
        tokenizer = self._tokenizer()
        model, tokens = parse_detokenize(await _read_json(request), tokenizer.vocab_size)
        self._check_model(model)
        return web.json_response({"prompt": await asyncio.to_thread(tokenizer.decode, tokens, False)})

    def _tokenizer(self):
        if self.engine.tokenizer is None:
            raise APIError(404, "this model has no tokenizer: /tokenize and /detokenize are not served",
                           code="no_tokenizer")
        return self.engine.tokenizer

    def _token_text(self, token_id: int) -> str:
        """A token as logprobs show it: its text, or vLLM's "token_id:<id>" without a tokenizer."""
        tokenizer = self.engine.tokenizer
        return f"token_id:{token_id}" if tokenizer is None else tokenizer.decode([token_id], False)

    def _check_model(self, name: str | None) -> None:
        if name is not None and name not in self.model_names:
            raise self._unknown_model(name)

    async def version(self, request: web.Request) -> web.Response:
        return web.json_response({"version": package_version()})

    def _model_card(self, name: str) -> dict:
        return {"id": name, "object": "model", "created": self.created, "owned_by": "adaptive-sarathi",
                "max_model_len": self.engine.max_model_len}

    def _unknown_model(self, name: str) -> APIError:
        served = ", ".join(f"'{served}'" for served in self.model_names)
        return APIError(404, f"model '{name}' does not exist: this server serves {served}",
                        param="model", code="model_not_found")

    async def health(self, request: web.Request) -> web.Response:
        """Readiness: 200 while new requests are taken; 503 from the moment shutdown starts (so a
        load balancer stops sending at once) or the engine fails."""
        if self.engine.is_serving:
            return web.json_response({"status": "ok"})
        status = "engine failed" if self.engine.error is not None else "shutting down"
        return web.json_response({"status": status}, status=503)

    async def live(self, request: web.Request) -> web.Response:
        """Liveness: 200 for as long as the process answers HTTP, draining included (a probe that
        failed during the drain would have the process killed before its streams finish); 503
        only once the engine failed, which a restart may cure."""
        if self.engine.error is not None:
            return web.json_response({"status": "engine failed"}, status=503)
        return web.json_response({"status": "ok"})

    async def metrics(self, request: web.Request) -> web.Response:
        body, content_type = self._metrics.render()
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def get_slo_policy(self, request: web.Request) -> web.Response:
        if self.slo is None:
            raise APIError(404, "this server runs without an SLO policy: start it with --policy adaptive "
                                "--slo-policy FILE|NAME, or PUT one to /v1/slo_policy", type="not_found_error",
                           code="no_slo_policy")
        return web.json_response(self.slo.to_dict())

    async def put_slo_policy(self, request: web.Request) -> web.Response:
        document = await _read_policy_document(request)
        try:
            policy = policy_from_dict(document)
        except SLOPolicyError as err:
            raise bad_request(err.field, str(err), code="invalid_slo_policy") from None
        async with self._slo_lock:
            try:
                await self.engine.set_slo(policy)
            except NoSLOPolicyError as err:
                raise APIError(409, f"{err}: there is no SLO policy to replace. Start the server with --policy "
                                    "adaptive (or fixed:B:edf) and --slo-policy FILE|NAME",
                               code="no_slo_policy") from None
            except ValueError as err:  # the budget policy refused it, e.g. a level outside the new bounds
                raise bad_request("budget", f"the budget policy refused the SLO policy, which is not in force: "
                                            f"{err}", code="invalid_slo_policy") from None
            except (EngineStoppedError, EngineDeadError):
                raise _unavailable(self.engine) from None
            self.slo = policy
            self._metrics.set_slo_policy(**slo_fields(policy))
            if self._on_slo_change is not None:
                self._on_slo_change(policy)
        logger.info("SLO policy %r is in force", policy.name)
        return web.json_response(policy.to_dict())

    async def _generate(self, request: web.Request, parsed: GenerateRequest,
                        arrival: float) -> web.StreamResponse:
        self._check_model(parsed.model)
        slo_class = request_class(self.slo, parsed.slo_class, request.headers.get(SLO_CLASS_HEADER))
        if not self.engine.is_serving:  # before any work: tokenizing would be wasted
            raise _unavailable(self.engine)
        header = ResponseHeader(parsed.chat, self.model_name, n=parsed.n,
                                token_text=self._token_text if parsed.params.logprobs is not None else None)
        try:
            prompts = await self.engine.tokenize(parsed.prompts)
            _check_context(parsed, prompts, self.engine.max_model_len)
            # Sequence prompt_index * n + i is sample i of that prompt: its choice index too.
            sequences = [p for p in prompts for _ in range(parsed.n)]
            params = parsed.sample_params() * len(prompts)
            ids = engine_request_ids(request.headers.get(REQUEST_ID_HEADER), len(sequences))
            async with self.engine.open(sequences, params, arrival, slo_class=slo_class, request_ids=ids) as stream:
                if parsed.stream:
                    return await _send_events(request, stream_chunks(header, stream, parsed.include_usage,
                                                                            parsed.continuous_usage))
                return web.json_response(await collect(header, stream_chunks(header, stream, include_usage=True)))
        except InvalidRequestError as err:
            if err.field == "request_id":
                raise bad_request(REQUEST_ID_HEADER, f"{err} (header {REQUEST_ID_HEADER})") from None
            field = "messages" if parsed.chat and err.field == "prompt" else err.field
            raise bad_request(field, str(err)) from None
        except QueueFullError as err:
            raise APIError(429, f"the server is at capacity ({err}): retry later", type="rate_limit_error",
                           code=err.code, headers={"Retry-After": str(self.retry_after_s)}) from None
        except EngineStoppedError:
            raise _unavailable(self.engine) from None
        except (EngineDeadError, RequestFailedError) as err:  # it failed on its way: a server error
            raise APIError(500, str(err), type="internal_error") from None


def _unavailable(engine: AsyncEngine) -> APIError:
    # 503, not 500: a dead engine makes the process exit (see server.serve) and a supervisor
    # restarts it; clients should retry elsewhere or later.
    if engine.error is not None:
        return APIError(503, f"the engine failed and the server is exiting: {engine.error!r}",
                        type="service_unavailable_error")
    return APIError(503, "the server is shutting down", type="service_unavailable_error")


def _check_context(parsed: GenerateRequest, prompts: list[list[int]], max_model_len: int) -> None:
    """A 400 when an explicit max_tokens cannot fit after a prompt in the context window."""
    if not parsed.max_tokens_given:
        return
    field = "max_completion_tokens" if parsed.max_tokens_field == "max_completion_tokens" else "max_tokens"
    for index, prompt in enumerate(prompts):
        # A prompt that alone fills the window is the prompt's fault: the engine names it.
        if len(prompt) < max_model_len < len(prompt) + parsed.params.max_tokens:
            where = "" if len(prompts) == 1 else f" (prompt {index})"
            raise bad_request(field, f"'{field}'={parsed.params.max_tokens} plus the prompt's {len(prompt)} tokens"
                                     f"{where} exceed the context window of {max_model_len} tokens: ask for at most "
                                     f"{max(max_model_len - len(prompt), 0)} tokens or shorten the prompt")


async def _read_json(request: web.Request) -> Any:
    raw = await request.read()
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as err:  # bad JSON, bad UTF-8, absurd nesting
        raise bad_request(None, f"the body is not valid JSON: {err}") from None


_YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")


async def _read_policy_document(request: web.Request) -> Any:
    """The body of a PUT /v1/slo_policy: YAML text for a YAML content type, else JSON."""
    if request.content_type not in _YAML_TYPES:
        return await _read_json(request)
    raw = await request.read()
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError as err:
        raise bad_request(None, f"the body is not valid YAML: {err}") from None


async def _send_events(request: web.Request, chunks: AsyncIterator[dict[str, Any]]) -> web.StreamResponse:
    """Write chunks as server-sent events, then `data: [DONE]`. A client that hangs up ends the
    loop; the caller's stream context then aborts its requests."""
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    try:
        async for chunk in chunks:
            await response.write(_event(chunk))
        await response.write(b"data: [DONE]\n\n")
    except ConnectionResetError:
        return response
    except (EngineDeadError, RequestFailedError) as err:  # too late for a status code: say it in the stream
        await response.write(_event(APIError(500, str(err), type="internal_error").body()))
    await response.write_eof()
    return response


def _event(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"
