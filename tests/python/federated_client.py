#!/usr/bin/env python3
"""Plan-driven MCP client (official Python SDK) for Berth's federated-endpoint tests.

Usage: federated_client.py URL PLAN_JSON

  URL        a Streamable HTTP endpoint, e.g. http://127.0.0.1:18900/mcp/work
  PLAN_JSON  {"expect_tools": [names that tools/list must contain],
              "calls": [{"tool": NAME, "args": {...}, "expect": SUBSTRING}],
              "sampling": {"tool": NAME, "args": {...}, "expect": SUBSTRING},  (optional)
              "headers": {"Name": "value"}}                                   (optional)

Connects, initializes (declaring sampling: sampling/createMessage is answered
with the text berth-sampling-reply-7f3a), lists every page of tools, checks
expect_tools, makes each call in order (a result must not be isError and its
first text content must contain "expect"), then the sampling call, and closes
the session with DELETE (which must answer 2xx).

Prints exactly one JSON line on stdout:
  {"ok": true, "client": ..., "tools": [...], "results": [first text of each call],
   "sampling": first text of the sampling call (only when the plan has one)}   exit 0
  {"ok": false, "step": ..., "error": ...}                                     exit 1
(exit 2 with the same failure line for a bad command line or plan).

Environment: BERTH_E2E_TIMEOUT_MS, the hard overall deadline (default 60000).
"""

from __future__ import annotations

import sys
from datetime import timedelta
from importlib.metadata import version
from typing import Any

from plan_common import DEADLINE_S, check, first_text, serve_plan, short

import anyio
import httpx
from mcp import ClientSession, types
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

SAMPLING_TEXT = "berth-sampling-reply-7f3a"
CLIENT = f"mcp-python-sdk {version('mcp')}"

step = "startup"




class Sampling:
    requests = 0


async def sampling_callback(context: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
    Sampling.requests += 1
    return types.CreateMessageResult(
        role="assistant",
        content=types.TextContent(type="text", text=SAMPLING_TEXT),
        model="berth-e2e-model",
        stopReason="endTurn",
    )


async def call(session: ClientSession, c: dict[str, Any]) -> str:
    result = await session.call_tool(c["tool"], c.get("args") or {})
    text = first_text(result)
    check(not result.isError, f"{c['tool']} returned isError: {short(text)}")
    check(text is not None, f"{c['tool']} returned no text content: {short(result.content)}")
    assert text is not None
    if c.get("expect") is not None:
        check(c["expect"] in text, f"{c['tool']}: first text lacks {c['expect']!r}: {short(text)}")
    return text


async def run(url: str, plan: dict[str, Any]) -> dict[str, Any]:
    global step
    deletes: list[tuple[str | None, int]] = []

    async def on_response(response: httpx.Response) -> None:
        if response.request.method == "DELETE":
            deletes.append((response.request.headers.get("mcp-session-id"), response.status_code))

    http_client = create_mcp_http_client(headers={str(k): str(v) for k, v in (plan.get("headers") or {}).items()})
    http_client.event_hooks = {"request": [], "response": [on_response]}
    out: dict[str, Any] = {"ok": True, "client": CLIENT}
    session_id: str | None = None

    async with http_client:
        step = "connect"
        async with streamable_http_client(url, http_client=http_client) as (read, write, get_session_id):
            async with ClientSession(
                read,
                write,
                read_timeout_seconds=timedelta(seconds=DEADLINE_S),
                sampling_callback=sampling_callback,
                client_info=types.Implementation(name="berth-federated-python", version="0.1.0"),
            ) as session:
                step = "initialize"
                await session.initialize()
                session_id = get_session_id()
                check(session_id, "server assigned no Mcp-Session-Id on initialize")

                step = "list-tools"
                tools: list[str] = []
                cursor: str | None = None
                seen: set[str] = set()
                while True:
                    page = await session.list_tools(params=types.PaginatedRequestParams(cursor=cursor) if cursor else None)
                    tools.extend(t.name for t in page.tools)
                    cursor = page.nextCursor
                    if not cursor:
                        break
                    check(cursor not in seen, f"tools/list repeated cursor {cursor!r}")
                    seen.add(cursor)
                out["tools"] = tools

                step = "expect-tools"
                missing = [t for t in plan.get("expect_tools", []) if t not in tools]
                check(not missing, f"tools/list lacks {missing}; it has {tools}")

                out["results"] = []
                for c in plan.get("calls", []):
                    step = f"call {c['tool']}"
                    out["results"].append(await call(session, c))

                if plan.get("sampling"):
                    step = f"sampling {plan['sampling']['tool']}"
                    text = await call(session, plan["sampling"])
                    check(Sampling.requests >= 1, "the client never received sampling/createMessage")
                    out["sampling"] = text
                step = "close"
        # Leaving streamable_http_client sends DELETE (terminate_on_close=True).
        dels = [status for sid, status in deletes if sid == session_id]
        check(dels, "closing sent no DELETE carrying the session id")
        check(200 <= dels[0] < 300, f"DELETE answered HTTP {dels[0]} (expected 2xx)")
    return out


def main() -> int:
    return serve_plan("federated_client.py", run, lambda: step, anyio.run)


if __name__ == "__main__":
    sys.exit(main())
