#!/usr/bin/env python3
"""Plan-driven MCP client (OpenAI Agents SDK) for Berth's federated-endpoint tests.

Usage: agents_client.py URL PLAN_JSON

  URL        a Streamable HTTP endpoint, e.g. http://127.0.0.1:18900/mcp/work
  PLAN_JSON  {"expect_tools": [names that tools/list must contain],
              "calls": [{"tool": NAME, "args": {...}, "expect": SUBSTRING}],
              "sampling": {...},                 (ignored: see below)
              "headers": {"Name": "value"}}     (optional)

Drives the SDK's own MCP client, agents.mcp.MCPServerStreamableHttp (connect,
list_tools over every page, call_tool, cleanup), with no model and no network
beyond URL: tracing is disabled before the SDK is imported, and no Agent or
Runner is built, so nothing contacts OpenAI. Each call's result must not be
isError and its first text content must contain "expect"; cleanup must send
DELETE for the session and it must answer 2xx.

The Agents SDK has no sampling callback (its ClientSession is built without
one, so it declares no sampling capability): a plan's "sampling" key is not
run, its tool is not required in tools/list even if expect_tools names it, and
the output says "sampling": "unsupported".

Prints exactly one JSON line on stdout:
  {"ok": true, "client": ..., "tools": [...], "results": [first text of each call],
   "sampling": "unsupported"}                   exit 0
  {"ok": false, "step": ..., "error": ...}      exit 1
(exit 2 with the same failure line for a bad command line or plan).

Environment: BERTH_E2E_TIMEOUT_MS, the hard overall deadline (default 60000).
"""

from __future__ import annotations

import os

# Before the SDK is imported: its trace exporter would otherwise post to OpenAI.
os.environ["OPENAI_AGENTS_DISABLE_TRACING"] = "1"

import asyncio  # noqa: E402
import sys  # noqa: E402
from importlib.metadata import version  # noqa: E402
from typing import Any  # noqa: E402
from plan_common import DEADLINE_S, check, first_text, serve_plan, short  # noqa: E402

import httpx  # noqa: E402
from agents import set_tracing_disabled  # noqa: E402
from agents.mcp import MCPServerStreamableHttp  # noqa: E402
from mcp import types  # noqa: E402
from mcp.shared._httpx_utils import create_mcp_http_client  # noqa: E402

set_tracing_disabled(True)

CLIENT = f"openai-agents {version('openai-agents')} (mcp {version('mcp')})"

step = "startup"




async def run(url: str, plan: dict[str, Any]) -> dict[str, Any]:
    global step
    deletes: list[tuple[str | None, int]] = []

    async def on_response(response: httpx.Response) -> None:
        if response.request.method == "DELETE":
            deletes.append((response.request.headers.get("mcp-session-id"), response.status_code))

    def http_client_factory(
        headers: dict[str, str] | None = None,
        timeout: httpx.Timeout | None = None,
        auth: httpx.Auth | None = None,
    ) -> httpx.AsyncClient:
        client = create_mcp_http_client(headers=headers, timeout=timeout, auth=auth)
        client.event_hooks = {"request": [], "response": [on_response]}
        return client

    server = MCPServerStreamableHttp(
        {
            "url": url,
            "headers": {str(k): str(v) for k, v in (plan.get("headers") or {}).items()},
            "timeout": DEADLINE_S,
            "terminate_on_close": True,
            "httpx_client_factory": http_client_factory,
        },
        name="berth",
        client_session_timeout_seconds=DEADLINE_S,
    )
    out: dict[str, Any] = {"ok": True, "client": CLIENT}
    session_id: str | None = None
    step = "connect"
    try:
        await server.connect()
        session_id = server._get_session_id() if server._get_session_id else None
        check(session_id, "server assigned no Mcp-Session-Id on initialize")

        step = "list-tools"  # list_tools() follows nextCursor over every page
        tools = [t.name for t in await server.list_tools()]
        out["tools"] = tools

        step = "expect-tools"
        # Without the sampling capability the plan's sampling tool need not be
        # listed (server-everything offers it only to sampling clients).
        skip = {plan["sampling"].get("tool")} if isinstance(plan.get("sampling"), dict) else set()
        missing = [t for t in plan.get("expect_tools", []) if t not in tools and t not in skip]
        check(not missing, f"tools/list lacks {missing}; it has {tools}")

        out["results"] = []
        for c in plan.get("calls", []):
            step = f"call {c['tool']}"
            result = await server.call_tool(c["tool"], c.get("args") or {})
            text = first_text(result)
            check(not result.isError, f"{c['tool']} returned isError: {short(text)}")
            check(text is not None, f"{c['tool']} returned no text content: {short(result.content)}")
            if c.get("expect") is not None:
                check(c["expect"] in str(text), f"{c['tool']}: first text lacks {c['expect']!r}: {short(text)}")
            out["results"].append(text)
        out["sampling"] = "unsupported"
    finally:
        last_step = step
        step = "close"
        # cleanup() sends DELETE (terminate_on_close) and logs, not raises, its errors.
        await server.cleanup()
        step = last_step
    step = "close"
    dels = [status for sid, status in deletes if sid == session_id]
    check(dels, "cleanup() sent no DELETE carrying the session id")
    check(200 <= dels[0] < 300, f"DELETE answered HTTP {dels[0]} (expected 2xx)")
    return out


def main() -> int:
    return serve_plan("agents_client.py", run, lambda: step, lambda guarded: asyncio.run(guarded()))


if __name__ == "__main__":
    sys.exit(main())
