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

import json
import os
import sys
import threading
from datetime import timedelta
from importlib.metadata import version
from typing import Any

from plan_common import StepError, check, emit, load_plan, short

import anyio
import httpx
from mcp import ClientSession, types
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

SAMPLING_TEXT = "berth-sampling-reply-7f3a"
DEADLINE_S = float(os.environ.get("BERTH_E2E_TIMEOUT_MS") or "60000") / 1000
# Past the deadline plus this grace a watchdog thread ends the process even if
# the event loop is stuck (e.g. in a cleanup that never returns).
HARD_GRACE_S = 3.0
CLIENT = f"mcp-python-sdk {version('mcp')}"

step = "startup"


def fail_line(error: str) -> dict[str, Any]:
    return {"ok": False, "step": step, "error": error}


def first_text(result: types.CallToolResult) -> str | None:
    for c in result.content:
        if isinstance(c, types.TextContent):
            return c.text
    return None


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


def leaves(e: BaseException) -> list[BaseException]:
    if isinstance(e, BaseExceptionGroup):
        return [leaf for sub in e.exceptions for leaf in leaves(sub)]
    return [e]


def describe(e: BaseException) -> str:
    if isinstance(e, StepError):
        return str(e)
    if isinstance(e, TimeoutError):
        return f"timed out after {DEADLINE_S:g} s (BERTH_E2E_TIMEOUT_MS)"
    if isinstance(e, httpx.HTTPStatusError):
        return f"HTTP {e.response.status_code} from {e.request.method} {e.request.url}"
    return f"{type(e).__name__}: {e}"


def watchdog() -> None:
    if emit(fail_line(f"hard deadline: no result after {DEADLINE_S + HARD_GRACE_S:g} s")):
        os._exit(1)


def main() -> int:
    if len(sys.argv) != 3:
        emit({"ok": False, "step": "usage", "error": "usage: federated_client.py URL PLAN_JSON"})
        return 2
    url = sys.argv[1]
    try:
        plan = load_plan(sys.argv[2])
    except StepError as e:
        emit({"ok": False, "step": "plan", "error": str(e)})
        return 2

    timer = threading.Timer(DEADLINE_S + HARD_GRACE_S, watchdog)
    timer.daemon = True
    timer.start()

    async def guarded() -> dict[str, Any]:
        with anyio.fail_after(DEADLINE_S):
            return await run(url, plan)

    try:
        out = anyio.run(guarded)
    except BaseException as e:  # noqa: BLE001 - report anything, groups and timeouts included
        errs = leaves(e)
        # A StepError is the real cause; cancellations around it are noise.
        errs = [x for x in errs if isinstance(x, StepError)] or errs
        emit(fail_line("; ".join(describe(x) for x in errs)))
        return 1
    emit(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
