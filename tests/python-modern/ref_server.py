"""Reference MCP server (Python SDK `mcp` 2.3.0, Streamable HTTP) for Berth's modern-client tests.

    tests/python-modern/.venv/bin/python tests/python-modern/ref_server.py [--host 127.0.0.1] [--port 8765]

Serves http://HOST:PORT/mcp with BOTH eras: 2026-07-28 (stateless, per-request `_meta`
envelope, `server/discover`, `subscriptions/listen`) and the 2025 `initialize` handshake.
Prints `READY http://HOST:PORT/mcp` on stdout once it accepts connections.

It documents the behaviour the client scripts (client.py here, tests/node-modern/client.mjs)
expect from any modern server, Berth included:

  echo(message)            -> text `message`
  add(a, b)                -> text of a+b (e.g. "5" for 2+3; integral sums print without ".0")
  slow(seconds=5)          -> sleeps, sending a progress notification every 100 ms
                              (progress=i, total=10*seconds) when the request carries a progressToken;
                              honours cancellation (closing the response stream cancels it)
  trigger_tools_changed()  -> publishes notifications/tools/list_changed to every open
                              subscriptions/listen stream that asked for toolsListChanged
  stats()                  -> JSON counters {"slow_started", "slow_completed", "slow_cancelled"}
                              so a test can check that a cancelled call really stopped server-side

What the two SDK clients insist on from a 2026-07-28 server (checked against a hand-made server):
every result carries "resultType": "complete" (TS 2.4.0: INVALID_RESULT without it; mcp 2.3.0:
ValidationError), and mcp 2.3.0 also requires "ttlMs" and "cacheScope" on tools/list (and the
other cacheable results: prompts/list, resources/list, resources/templates/list, resources/read).
A server/discover result without resultType is still accepted by both probes.
"""

from __future__ import annotations

import argparse
import json
import sys

import anyio
import uvicorn
from mcp.server.mcpserver import Context, MCPServer

STATS = {"slow_started": 0, "slow_completed": 0, "slow_cancelled": 0}

mcp = MCPServer("berth-ref-python", version="1.0.0", log_level="WARNING")


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


@mcp.tool(description="Echo back the message")
def echo(message: str) -> str:
    return message


@mcp.tool(description="Add two numbers")
def add(a: float, b: float) -> str:
    return _num(a + b)


@mcp.tool(description="Sleep for `seconds`, reporting progress every 100 ms; cancellable")
async def slow(ctx: Context, seconds: float = 5) -> str:
    steps = max(1, int(round(seconds * 10)))
    STATS["slow_started"] += 1
    try:
        for i in range(1, steps + 1):
            await anyio.sleep(0.1)
            await ctx.report_progress(i, steps, f"step {i}/{steps}")
    except anyio.get_cancelled_exc_class():
        STATS["slow_cancelled"] += 1
        print(f"[ref_server.py] slow({seconds}) cancelled", file=sys.stderr, flush=True)
        raise
    STATS["slow_completed"] += 1
    return f"slept {_num(seconds)}s"


@mcp.tool(description="Make the server send notifications/tools/list_changed to listen subscribers")
async def trigger_tools_changed(ctx: Context) -> str:
    await ctx.notify_tools_changed()
    return "tools/list_changed sent"


@mcp.tool(description="Counters of slow() calls started/completed/cancelled")
def stats() -> str:
    return json.dumps(STATS, sort_keys=True)


async def main(host: str, port: int) -> None:
    app = mcp.streamable_http_app(host=host)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve)
        while not server.started:
            await anyio.sleep(0.05)
        print(f"READY http://{host}:{port}/mcp", flush=True)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8765)
    a = p.parse_args()
    anyio.run(main, a.host, a.port)
