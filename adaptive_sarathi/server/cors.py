"""CORS for browser clients, off unless origins are allowed (vLLM's --allowed-origins,
--allowed-methods, --allowed-headers, --allow-credentials).

With origins allowed, a preflight (OPTIONS with Origin and Access-Control-Request-Method) is
answered here, before authentication (browsers send no credentials on a preflight): 200 with the
Access-Control-Allow-* headers when the origin, method and headers are allowed, else 400 saying
which is not. Every other response to an allowed Origin carries Access-Control-Allow-Origin (and
-Credentials when allowed). "*" in a list allows anything; with credentials allowed, a wildcard
origin is answered with the request's own origin, since browsers refuse "*" with credentials.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

PREFLIGHT_MAX_AGE_S = 600


@dataclass(frozen=True)
class CORSConfig:
    """Allowed origins (empty: CORS off), methods and request headers (case-insensitive), and
    whether responses may be read with credentials (cookies, Authorization)."""

    allowed_origins: tuple[str, ...] = ()
    allowed_methods: tuple[str, ...] = ("*",)
    allowed_headers: tuple[str, ...] = ("*",)
    allow_credentials: bool = False

    @property
    def enabled(self) -> bool:
        return bool(self.allowed_origins)

    def allow_origin_value(self, origin: str) -> str | None:
        """The Access-Control-Allow-Origin answer to `origin`, or None when it is not allowed."""
        if "*" in self.allowed_origins:
            return origin if self.allow_credentials else "*"
        return origin if origin in self.allowed_origins else None

    def method_allowed(self, method: str) -> bool:
        return "*" in self.allowed_methods or method.upper() in {m.upper() for m in self.allowed_methods}

    def headers_allowed(self, headers: list[str]) -> bool:
        allowed = {h.lower() for h in self.allowed_headers}
        return "*" in allowed or all(h.lower() in allowed for h in headers)


def _is_preflight(request: web.Request) -> bool:
    return (request.method == "OPTIONS" and "Origin" in request.headers
            and "Access-Control-Request-Method" in request.headers)


def cors_middleware(config: CORSConfig):
    @web.middleware
    async def cors(request: web.Request, handler) -> web.StreamResponse:
        if _is_preflight(request):
            return _preflight(config, request, request.headers["Origin"])
        return await handler(request)

    return cors


async def add_cors_headers(config: CORSConfig, request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: the CORS headers of a non-preflight response (streams included)."""
    origin = request.headers.get("Origin")
    if origin is None or _is_preflight(request):  # a preflight has its own answer
        return
    value = config.allow_origin_value(origin)
    if value is None:
        return
    response.headers["Access-Control-Allow-Origin"] = value
    if value != "*":
        response.headers.add("Vary", "Origin")
    if config.allow_credentials:
        response.headers["Access-Control-Allow-Credentials"] = "true"


def _preflight(config: CORSConfig, request: web.Request, origin: str) -> web.Response:
    method = request.headers["Access-Control-Request-Method"]
    asked = [h.strip() for h in request.headers.get("Access-Control-Request-Headers", "").split(",") if h.strip()]
    allow_origin = config.allow_origin_value(origin)
    refused = [what for what, ok in (("origin", allow_origin is not None), ("method", config.method_allowed(method)),
                                     ("headers", config.headers_allowed(asked))) if not ok]
    if refused:
        return web.Response(status=400, text=f"Disallowed CORS {', '.join(refused)}")
    headers = {"Access-Control-Allow-Origin": allow_origin, "Access-Control-Max-Age": str(PREFLIGHT_MAX_AGE_S),
               "Access-Control-Allow-Methods": method if "*" in config.allowed_methods
               else ", ".join(config.allowed_methods),
               "Access-Control-Allow-Headers": ", ".join(asked) if "*" in config.allowed_headers
               else ", ".join(config.allowed_headers)}
    if allow_origin != "*":
        headers["Vary"] = "Origin"
    if config.allow_credentials:
        headers["Access-Control-Allow-Credentials"] = "true"
    return web.Response(status=200, headers=headers)
