"""The OpenAI-compatible HTTP server: /v1/completions, /v1/chat/completions, /v1/models, /health, /metrics."""

from adaptive_sarathi.server.server import Server, ServerArgs, run_server, serve

__all__ = ["Server", "ServerArgs", "run_server", "serve"]
