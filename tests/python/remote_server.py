#!/usr/bin/env python3
"""Remote MCP upstream (official Python SDK, FastMCP) for Berth's remote-upstream tests.

Usage:
  tests/python/.venv/bin/python tests/python/remote_server.py \\
      --transport (streamable-http|sse) [--stateless] [--json-response] \\
      [--record-headers FILE] [--host 127.0.0.1] [--port 0]

  --transport streamable-http  Streamable HTTP at /mcp.
  --transport sse              Legacy HTTP+SSE: GET /sse opens the stream,
                               POST /messages/?session_id=... carries requests.
  --stateless                  FastMCP stateless_http=True (streamable-http only):
                               no Mcp-Session-Id, a fresh transport per POST.
  --json-response              FastMCP json_response=True (streamable-http only):
                               POSTs are answered with application/json, not SSE.
  --record-headers FILE        Append one JSON line per HTTP request received (any
                               path or method), written when the request arrives
                               ("path" is without the query string):
                               {"method": "POST", "path": "/mcp",
                                "headers": {"lowercased-name": "value", ...}}
                               A repeated header's values are joined with ", ".
  --host HOST                  Address to bind (default 127.0.0.1).
  --event-store                Keep every SSE event in memory, so a dropped stream can be
                               resumed with Last-Event-ID; the `interrupted` tool closes
                               its call's stream mid-way (2025-11-25 clients only).
  --tls-cert PEM --tls-key PEM Serve HTTPS with this certificate and key (the
                               READY line then says https://).
  --port PORT                  Port to bind (default 0: the OS picks a free one).
                               SO_REUSEADDR is set, so a killed server can be
                               restarted on the same port at once.

The script binds the socket itself and, once uvicorn accepts connections, prints
exactly one line to stdout (flushed):

  READY http://127.0.0.1:PORT/mcp     (streamable-http)
  READY http://127.0.0.1:PORT/sse     (sse)

It then serves until SIGTERM or SIGINT and exits 0 (open streams are cut after at
most 1 s). A second signal forces an immediate exit. Logs go to stderr only.

DNS-rebinding protection is the SDK's default for a loopback host: Host must be
127.0.0.1:*, localhost:* or [::1]:*, and an Origin, if sent, http://127.0.0.1:* etc.

Tools (names and arguments match tests/python/client.py's TOOL_CANDIDATES):
  echo(message: str)                      -> "Echo: <message>"
  trigger-long-running-operation(duration: float = 10, steps: int = 5)
      sends `steps` notifications/progress (progress=i, total=steps) spread over
      `duration` seconds (only if the call carried a progressToken), then
      -> "Long running operation completed. Duration: <d> seconds, Steps: <n>."
  trigger-sampling-request(prompt: str, maxTokens: int = 100)
      sends sampling/createMessage and
      -> "LLM sampling result: <the client's reply text>"
  trigger-elicitation-request()
      sends elicitation/create asking for {name: string (required), confirm:
      boolean (default true)} and, e.g. on accept,
      -> "Elicitation result: action=<accept|decline|cancel> content=<JSON or null>"
  add(a: int, b: int)                     -> "<a+b>"
  whoami()                                -> JSON object of the HTTP request headers
      this call arrived with (lowercased names; repeats joined with ", "). For
      sse that is the POST /messages/ request carrying the call.
  sleep(seconds: float)                   -> "slept" (after sleeping)
  crash_soon()                            -> "ok", then os._exit(3) ~200 ms later
Resources: static://berth/hello (text/plain, "Hello from Berth's remote test server").
Prompts:   args-prompt(city: str, state: str = "") -> "Tell me about <city>, <state>."

Where server-to-client messages go (progress, sampling/createMessage, elicitation/create):
  default          on the call's own POST SSE stream (related to the call), as the SDK does.
  --json-response  on the session's GET stream (unrelated): a JSON answer has no room for
                   them and the SDK drops related ones. The client must hold a GET stream.
  --stateless      sampling and elicitation cannot complete: the client's reply is a new
                   POST that reaches a fresh transport which does not know the pending
                   request. The request still goes out (on the POST stream; with
                   --json-response it cannot go out at all), and after 3 s the tool
                   returns isError: "Error executing tool trigger-sampling-request: no
                   sampling/createMessage reply within 3 s: this server runs --stateless, ..."
                   Progress works on the POST stream (not with --stateless --json-response).
Every tool result also carries structuredContent {"result": <the text>} (FastMCP's default).

tests/python/client.py (`client.py URL everything`, Streamable HTTP only) against it:
  streamable-http, with or without --json-response: every step passes.
  streamable-http --stateless: fails its first step, "FAIL connect: server did not assign
      an Mcp-Session-Id on initialize" (client.py needs a session for its DELETE checks).
  sse: fails "connect" (HTTP 405: client.py POSTs to /sse); use mcp.client.sse.sse_client.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import sys
import threading
from collections.abc import AsyncIterator, Generator
from typing import Any

import anyio
import uvicorn
from mcp.server.elicitation import elicit_with_validation
from mcp.server.fastmcp import Context, FastMCP
from mcp.server.streamable_http import EventCallback, EventId, EventMessage, EventStore, StreamId
from mcp.types import JSONRPCMessage
from mcp.types import SamplingMessage, TextContent
from pydantic import BaseModel, Field

STATELESS_REPLY_TIMEOUT_S = 3.0


def header_dict(raw: list[tuple[bytes, bytes]] | Any) -> dict[str, str]:
    """ASGI raw headers -> {lowercased name: value}, repeats joined with ", "."""
    out: dict[str, str] = {}
    for name, value in raw:
        k = name.decode("latin-1").lower()
        v = value.decode("latin-1")
        out[k] = f"{out[k]}, {v}" if k in out else v
    return out


class RecordHeaders:
    """ASGI middleware appending every HTTP request's method, path and headers to a file."""

    def __init__(self, app: Any, path: str) -> None:
        self.app = app
        # Line-buffered append: each request is one line, flushed at once.
        self.file = open(path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115 - lives as long as the server

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            line = json.dumps(
                {"method": scope["method"], "path": scope["path"], "headers": header_dict(scope["headers"])},
                separators=(",", ":"),
            )
            self.file.write(line + "\n")
            self.file.flush()
        await self.app(scope, receive, send)


class ElicitForm(BaseModel):
    name: str = Field(description="Your name")
    confirm: bool = Field(default=True, description="Confirm the request")


class MemoryEventStore(EventStore):
    """Every event of every stream, in memory, so a client can resume a stream."""

    def __init__(self) -> None:
        self.events: list[tuple[StreamId, EventId, JSONRPCMessage | None]] = []

    async def store_event(self, stream_id: StreamId, message: JSONRPCMessage | None) -> EventId:
        event_id = str(len(self.events) + 1)
        self.events.append((stream_id, event_id, message))
        return event_id

    async def replay_events_after(self, last_event_id: EventId, send_callback: EventCallback) -> StreamId | None:
        index = next((i for i, (_, e, _) in enumerate(self.events) if e == last_event_id), None)
        if index is None:
            return None
        stream = self.events[index][0]
        for stream_id, event_id, message in self.events[index + 1 :]:
            if stream_id == stream and message is not None:
                await send_callback(EventMessage(message, event_id))
        return stream


def build_server(args: argparse.Namespace) -> FastMCP:
    mcp = FastMCP(
        "berth-remote-test-server",
        host=args.host,
        port=args.port,
        stateless_http=args.stateless,
        json_response=args.json_response,
        log_level="WARNING",
        event_store=MemoryEventStore() if args.event_store else None,
    )

    def related(ctx: Context) -> str | None:
        # With --json-response a POST's answer is one JSON body: the SDK drops anything
        # sent "related" to the call (progress, sampling, elicitation). Unrelated
        # messages go out on the session's GET stream instead, which works if the
        # session has one (stateful). Otherwise they ride the call's own SSE stream.
        return None if args.json_response else ctx.request_id

    @contextlib.asynccontextmanager
    async def client_reply(what: str) -> AsyncIterator[None]:
        # Stateless, the client's reply is a new POST that reaches a fresh transport
        # which does not know the pending request, so the SDK would wait forever.
        # The request still goes out; the wait is bounded and ends in a clear error.
        if not args.stateless:
            yield
            return
        try:
            with anyio.fail_after(STATELESS_REPLY_TIMEOUT_S):
                yield
        except TimeoutError:
            why = (
                "the request has no stream to the client (--json-response)"
                if args.json_response
                else "the SDK cannot route the client's reply back to the waiting call"
            )
            raise ValueError(
                f"no {what} reply within {STATELESS_REPLY_TIMEOUT_S:g} s: this server runs --stateless, where {why}"
            ) from None

    @mcp.tool(description="Echoes back the input message")
    def echo(message: str) -> str:
        return f"Echo: {message}"

    @mcp.tool(
        name="trigger-long-running-operation",
        description="Runs for `duration` seconds, sending `steps` progress notifications",
    )
    async def long_running(ctx: Context, duration: float = 10, steps: int = 5) -> str:
        steps = max(1, steps)
        for i in range(1, steps + 1):
            await anyio.sleep(duration / steps)
            token = ctx.request_context.meta.progressToken if ctx.request_context.meta else None
            if token is not None:
                await ctx.session.send_progress_notification(
                    token, i, steps, f"step {i} of {steps}", related_request_id=related(ctx)
                )
        return f"Long running operation completed. Duration: {duration:g} seconds, Steps: {steps}."

    @mcp.tool(name="trigger-sampling-request", description="Asks the client's LLM (sampling/createMessage)")
    async def sampling(ctx: Context, prompt: str, maxTokens: int = 100) -> str:  # noqa: N803 - client.py's name
        async with client_reply("sampling/createMessage"):
            result = await ctx.session.create_message(
                messages=[SamplingMessage(role="user", content=TextContent(type="text", text=prompt))],
                max_tokens=maxTokens,
                system_prompt="You are a helpful test assistant.",
                related_request_id=related(ctx),
            )
        content = result.content
        reply = content.text if isinstance(content, TextContent) else str(content)
        return f"LLM sampling result: {reply}"

    @mcp.tool(name="trigger-elicitation-request", description="Asks the user for a name (elicitation/create)")
    async def elicitation(ctx: Context) -> str:
        async with client_reply("elicitation/create"):
            result = await elicit_with_validation(
                ctx.session, "Please provide your name for Berth's test", ElicitForm, related_request_id=related(ctx)
            )
        data = getattr(result, "data", None)
        content = json.dumps(data.model_dump()) if data is not None else "null"
        return f"Elicitation result: action={result.action} content={content}"

    @mcp.tool(description="Adds two integers")
    def add(a: int, b: int) -> str:
        return str(a + b)

    @mcp.tool(description="The HTTP request headers this call arrived with, as JSON")
    def whoami(ctx: Context) -> str:
        request = ctx.request_context.request
        if request is None:
            raise ValueError("no HTTP request in this call's context")
        return json.dumps(header_dict(request.scope["headers"]), sort_keys=True)

    @mcp.tool(
        description="Sends a progress notification, closes the call's SSE stream (with --event-store),"
        " sends another, then answers 'resumed': the client must resume the stream with Last-Event-ID"
    )
    async def interrupted(ctx: Context) -> str:
        token = ctx.request_context.meta.progressToken if ctx.request_context.meta else None
        if token is not None:
            await ctx.report_progress(1, 2)
        await ctx.close_sse_stream()
        await anyio.sleep(0.3)
        if token is not None:
            await ctx.report_progress(2, 2)
        return "resumed"

    @mcp.tool(description="Sleeps for `seconds`, then answers 'slept'")
    async def sleep(seconds: float) -> str:
        await anyio.sleep(seconds)
        return "slept"

    @mcp.tool(description="Answers 'ok', then the server process exits with status 3 about 200 ms later")
    def crash_soon() -> str:
        timer = threading.Timer(0.2, os._exit, args=(3,))
        timer.daemon = True
        timer.start()
        return "ok"

    @mcp.resource("static://berth/hello", name="hello", mime_type="text/plain", description="A fixed text")
    def hello() -> str:
        return "Hello from Berth's remote test server"

    @mcp.prompt(name="args-prompt", description="A prompt with arguments")
    def args_prompt(city: str, state: str = "") -> str:
        return f"Tell me about {city}, {state}."

    return mcp


class Server(uvicorn.Server):
    """uvicorn with a READY line once serving and a clean exit 0 on SIGTERM/SIGINT."""

    def __init__(self, config: uvicorn.Config, ready_url: str) -> None:
        super().__init__(config)
        self.ready_url = ready_url

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started and not self.should_exit:
            print(f"READY {self.ready_url}", flush=True)

    def handle_exit(self, sig: int, frame: Any) -> None:
        # A second signal of either kind skips the graceful wait.
        if self.should_exit:
            self.force_exit = True
        self.should_exit = True

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # uvicorn re-raises the captured signal after shutdown (exit by signal or a
        # KeyboardInterrupt traceback); tests want a plain exit 0 instead.
        previous = {s: signal.signal(s, self.handle_exit) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, h in previous.items():
                signal.signal(s, h)


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    # Lets a restarted server take the same port while old connections sit in TIME_WAIT.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise SystemExit(f"remote_server: cannot bind {host}:{port}: {e}") from e
    sock.listen(128)
    sock.setblocking(False)
    return sock


def main() -> int:
    p = argparse.ArgumentParser(description="Remote MCP test upstream for Berth (see the module docstring).")
    p.add_argument("--transport", required=True, choices=["streamable-http", "sse"])
    p.add_argument("--stateless", action="store_true")
    p.add_argument("--json-response", action="store_true")
    p.add_argument("--record-headers", metavar="FILE")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--event-store", action="store_true", help="keep events so streams can be resumed (Last-Event-ID)")
    p.add_argument("--tls-cert", metavar="PEM", help="serve HTTPS with this certificate (needs --tls-key)")
    p.add_argument("--tls-key", metavar="PEM")
    args = p.parse_args()
    if bool(args.tls_cert) != bool(args.tls_key):
        p.error("--tls-cert and --tls-key go together")
    if args.transport == "sse" and (args.stateless or args.json_response):
        p.error("--stateless and --json-response apply to --transport streamable-http only")

    mcp = build_server(args)
    app: Any = mcp.streamable_http_app() if args.transport == "streamable-http" else mcp.sse_app()
    if args.record_headers:
        app = RecordHeaders(app, args.record_headers)

    sock = bind(args.host, args.port)
    port = sock.getsockname()[1]
    host = f"[{args.host}]" if ":" in args.host else args.host
    path = "/mcp" if args.transport == "streamable-http" else "/sse"
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=1,
        # The session manager's task group lives in the app's lifespan (streamable-http).
        lifespan="on" if args.transport == "streamable-http" else "auto",
        ssl_certfile=args.tls_cert,
        ssl_keyfile=args.tls_key,
    )
    scheme = "https" if args.tls_cert else "http"
    Server(config, f"{scheme}://{host}:{port}{path}").run(sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(main())
