#!/usr/bin/env python3
"""End-to-end MCP client (official Python SDK) used by Berth's integration tests.

Usage: client.py URL MODE

  MODE everything  URL is a Streamable HTTP endpoint (.../mcp/<name>) serving
                   @modelcontextprotocol/server-everything.
  MODE memory      URL is a Streamable HTTP endpoint serving
                   @modelcontextprotocol/server-memory.

Prints one "ok <step>: <detail>" line per completed step on stdout and exits 0
on success; on failure prints "FAIL <step>: <reason>" on stderr and exits 1.

Environment:
  BERTH_E2E_TIMEOUT_MS  overall deadline for the whole script (default 55000)
  BERTH_E2E_STRICT=1    require HTTP 404 (not just 400/404) for requests that
                        reuse a terminated session id, as the MCP spec says.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
import uuid
from datetime import timedelta
from typing import Any

import anyio
import httpx
from mcp import ClientSession, types
from mcp.shared._httpx_utils import create_mcp_http_client

try:  # mcp >= 1.24 renamed the transport; keep the old name as a fallback
    from mcp.client.streamable_http import streamable_http_client as _new_transport
except ImportError:  # pragma: no cover
    _new_transport = None
    from mcp.client.streamable_http import streamablehttp_client as _old_transport

SAMPLING_TEXT = "berth-sampling-reply-7f3a"
ELICIT_NAME = "Berth Tester"
REQUEST_TIMEOUT = timedelta(seconds=20)
OVERALL_TIMEOUT_S = float(os.environ.get("BERTH_E2E_TIMEOUT_MS", "55000")) / 1000
STRICT = os.environ.get("BERTH_E2E_STRICT") == "1"

# Tool names differ across server-everything releases; the first one listed wins.
TOOL_CANDIDATES = {
    "echo": ["echo"],
    "progress": ["trigger-long-running-operation", "longRunningOperation"],
    "sampling": ["trigger-sampling-request", "sampleLLM"],
    "elicitation": ["trigger-elicitation-request", "startElicitation"],
}


class StepError(Exception):
    pass


current_step = "startup"


def ok(step: str, detail: str = "") -> None:
    print(f"ok {step}: {detail}" if detail else f"ok {step}", flush=True)


def check(cond: Any, message: str) -> None:
    if not cond:
        raise StepError(message)


def begin(step: str) -> None:
    global current_step
    current_step = step


def short(s: Any, n: int = 120) -> str:
    s = " ".join(str(s).split())
    return s if len(s) <= n else s[:n] + "…"


def texts(result: types.CallToolResult) -> str:
    return "\n".join(c.text for c in result.content if isinstance(c, types.TextContent))


def tool_text(result: types.CallToolResult, what: str) -> str:
    check(not result.isError, f"{what}: tool returned isError: {short(texts(result), 300)}")
    return texts(result)


def pick_tool(tools: list[types.Tool], key: str) -> str:
    names = [t.name for t in tools]
    for cand in TOOL_CANDIDATES[key]:
        if cand in names:
            return cand
    raise StepError(f"no {key} tool: expected one of {TOOL_CANDIDATES[key]} in tools/list, got {names}")


def fill_elicitation_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """Fill a flat elicitation form schema, preferring declared defaults."""
    content: dict[str, Any] = {}
    for key, prop in (schema or {}).get("properties", {}).items():
        t = prop.get("type")
        if key == "name":
            value: Any = ELICIT_NAME
        elif "default" in prop:
            value = prop["default"]
        elif t == "boolean":
            value = True
        elif t == "integer":
            value = int(prop.get("minimum", 1))
        elif t == "number":
            value = prop.get("minimum", 1)
        elif t == "array":
            items = prop.get("items", {})
            if items.get("enum"):
                value = [items["enum"][0]]
            elif items.get("anyOf") or items.get("oneOf"):
                value = [(items.get("anyOf") or items.get("oneOf"))[0]["const"]]
            else:
                value = []
        elif prop.get("enum"):
            value = prop["enum"][0]
        elif prop.get("oneOf") or prop.get("anyOf"):
            value = (prop.get("oneOf") or prop.get("anyOf"))[0]["const"]
        elif prop.get("format") == "email":
            value = "berth@example.com"
        elif prop.get("format") == "uri":
            value = "https://example.com/berth"
        elif prop.get("format") == "date":
            value = "2000-01-01"
        elif prop.get("format") == "date-time":
            value = "2000-01-01T00:00:00Z"
        else:
            value = ELICIT_NAME
        content[key] = value
    return content


class Recorder:
    """httpx response hook remembering every DELETE (session termination)."""

    def __init__(self) -> None:
        self.deletes: list[tuple[str | None, int]] = []

    async def __call__(self, response: httpx.Response) -> None:
        if response.request.method == "DELETE":
            self.deletes.append((response.request.headers.get("mcp-session-id"), response.status_code))


class Counters:
    sampling = 0
    elicitation = 0


counters = Counters()


async def sampling_callback(context: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
    counters.sampling += 1
    return types.CreateMessageResult(
        role="assistant",
        content=types.TextContent(type="text", text=SAMPLING_TEXT),
        model="berth-e2e-model",
        stopReason="endTurn",
    )


async def elicitation_callback(context: Any, params: Any) -> types.ElicitResult:
    counters.elicitation += 1
    schema = getattr(params, "requestedSchema", None)
    if schema is None:  # URL-mode elicitation: just consent
        return types.ElicitResult(action="accept")
    return types.ElicitResult(action="accept", content=fill_elicitation_schema(schema))


async def run_everything(session: ClientSession) -> None:
    begin("list-tools")
    tools = (await session.list_tools()).tools
    check(tools, "tools/list returned no tools")
    ok("list-tools", f"{len(tools)} tools")
    names = {k: pick_tool(tools, k) for k in TOOL_CANDIDATES}

    begin("call-echo")
    msg = f"hello from berth {uuid.uuid4()}"
    text = tool_text(await session.call_tool(names["echo"], {"message": msg}), names["echo"])
    check(msg in text, f"echo result does not contain the message: {short(text)}")
    ok("call-echo", short(text))

    begin("call-progress")
    progress: list[tuple[float, float | None]] = []

    async def on_progress(p: float, total: float | None, message: str | None) -> None:
        progress.append((p, total))

    result = await session.call_tool(names["progress"], {"duration": 2, "steps": 4}, progress_callback=on_progress)
    tool_text(result, names["progress"])
    check(progress, f"no notifications/progress received while {names['progress']} ran")
    ok("call-progress", f"{len(progress)} progress notifications (last {progress[-1][0]:g}/{progress[-1][1]:g})")

    begin("call-sampling")
    text = tool_text(
        await session.call_tool(names["sampling"], {"prompt": "Say something for Berth", "maxTokens": 50}),
        names["sampling"],
    )
    check(counters.sampling >= 1, "client never received a sampling/createMessage request")
    check(SAMPLING_TEXT in text, f"sampling result lacks the client's reply {SAMPLING_TEXT}: {short(text, 300)}")
    ok("call-sampling", f"sampling handled {counters.sampling}x, result contains reply")

    begin("call-elicitation")
    text = tool_text(await session.call_tool(names["elicitation"], {}), names["elicitation"])
    check(counters.elicitation >= 1, "client never received an elicitation/create request")
    check("accept" in text.lower(), f"elicitation result does not report action accept: {short(text, 300)}")
    check(ELICIT_NAME in text, f"elicitation result does not echo the accepted content ({ELICIT_NAME}): {short(text, 300)}")
    ok("call-elicitation", f"elicitation handled {counters.elicitation}x, result reflects accepted content")

    begin("list-resources")
    resources = (await session.list_resources()).resources
    check(resources, "resources/list returned no resources")
    res = resources[0]
    ok("list-resources", f"{len(resources)} resources, first {res.uri}")

    begin("read-resource")
    contents = (await session.read_resource(res.uri)).contents
    check(contents, f"resources/read {res.uri} returned no contents")
    c = contents[0]
    check(str(c.uri) == str(res.uri), f"resources/read returned uri {c.uri}, expected {res.uri}")
    data = getattr(c, "text", None) or getattr(c, "blob", None) or ""
    check(data, f"resource {res.uri} is empty")
    ok("read-resource", f"{c.uri} ({c.mimeType}, {len(data)} chars)")

    begin("list-prompts")
    prompts = (await session.list_prompts()).prompts
    pnames = [p.name for p in prompts]
    check("args-prompt" in pnames, f"prompts/list lacks args-prompt: {pnames}")
    ok("list-prompts", f"{len(prompts)} prompts")

    begin("get-prompt")
    got = await session.get_prompt("args-prompt", {"city": "Hamburg", "state": "HH"})
    text = "\n".join(m.content.text for m in got.messages if isinstance(m.content, types.TextContent))
    check("Hamburg, HH" in text, f"prompt text does not contain the arguments: {short(text)}")
    ok("get-prompt", short(text))


def json_result(result: types.CallToolResult, what: str) -> Any:
    if result.structuredContent is not None:
        return result.structuredContent
    text = tool_text(result, what)
    try:
        return json.loads(text)
    except ValueError as e:
        raise StepError(f"{what}: result is not JSON: {short(text)}") from e


async def run_memory(session: ClientSession) -> None:
    tag = uuid.uuid4().hex[:8]  # unique names keep runs independent of a shared memory file
    entities = [
        {"name": f"berth-alpha-{tag}", "entityType": "gateway", "observations": [f"routes mcp traffic {tag}"]},
        {"name": f"berth-beta-{tag}", "entityType": "server", "observations": ["speaks stdio"]},
    ]

    begin("list-tools")
    names = [t.name for t in (await session.list_tools()).tools]
    for n in ("create_entities", "read_graph", "search_nodes"):
        check(n in names, f"tools/list lacks {n}: {names}")
    ok("list-tools", f"{len(names)} tools")

    begin("create-entities")
    created = json_result(await session.call_tool("create_entities", {"entities": entities}), "create_entities")
    created = created if isinstance(created, list) else created.get("entities")
    check(isinstance(created, list) and len(created) == len(entities), f"create_entities returned {short(created)}")
    ok("create-entities", "created " + ", ".join(e["name"] for e in created))

    begin("read-graph")
    graph = json_result(await session.call_tool("read_graph", {}), "read_graph")
    by_name = {e["name"]: e for e in graph["entities"]}
    for e in entities:
        got = by_name.get(e["name"])
        check(got, f"read_graph lacks entity {e['name']}")
        check(got["entityType"] == e["entityType"], f"entity {e['name']} has type {got['entityType']}")
        check(got["observations"] == e["observations"], f"entity {e['name']} has observations {got['observations']}")
    ok("read-graph", f"{len(graph['entities'])} entities in graph")

    begin("search-nodes")
    graph = json_result(await session.call_tool("search_nodes", {"query": f"mcp traffic {tag}"}), "search_nodes")
    found = [e["name"] for e in graph["entities"]]
    check(found == [entities[0]["name"]], f"search_nodes returned {found}, expected {[entities[0]['name']]}")
    ok("search-nodes", f"found {found[0]}")


def open_transport(url: str, http_client: httpx.AsyncClient) -> Any:
    if _new_transport is not None:
        return _new_transport(url, http_client=http_client)  # terminate_on_close=True by default
    return _old_transport(url)  # pragma: no cover


async def run(url: str, mode: str) -> None:
    recorder = Recorder()
    http_client = create_mcp_http_client()
    http_client.event_hooks = {"request": [], "response": [recorder]}
    everything = mode == "everything"
    session_id: str | None = None
    protocol: str | None = None

    async with http_client:
        begin("connect")
        async with open_transport(url, http_client) as (read, write, get_session_id):
            async with ClientSession(
                read,
                write,
                read_timeout_seconds=REQUEST_TIMEOUT,
                sampling_callback=sampling_callback if everything else None,
                elicitation_callback=elicitation_callback if everything else None,
                client_info=types.Implementation(name="berth-e2e-python", version="0.1.0"),
            ) as session:
                init = await session.initialize()
                session_id = get_session_id()
                protocol = init.protocolVersion
                check(session_id, "server did not assign an Mcp-Session-Id on initialize")
                ok(
                    "connect",
                    f"server={init.serverInfo.name}@{init.serverInfo.version} protocol={protocol} session={session_id}",
                )
                await (run_everything if everything else run_memory)(session)
                begin("terminate-session")
            # leaving streamable_http_client() sends DELETE (terminate_on_close=True)

        dels = [status for sid, status in recorder.deletes if sid == session_id]
        check(dels, "closing the transport sent no DELETE carrying the session id")
        check(200 <= dels[0] < 300, f"DELETE returned HTTP {dels[0]} (expected 2xx)")
        ok("terminate-session", f"DELETE {session_id} -> {dels[0]}")

        begin("session-gone")
        resp = await http_client.post(
            url,
            headers={
                "content-type": "application/json",
                "accept": "application/json, text/event-stream",
                "mcp-session-id": session_id or "",
                "mcp-protocol-version": protocol or "",
            },
            json={"jsonrpc": "2.0", "id": 99, "method": "tools/list", "params": {}},
            timeout=REQUEST_TIMEOUT.total_seconds(),
        )
        allowed = [404] if STRICT else [400, 404]
        check(
            resp.status_code in allowed,
            f"request with terminated session id got HTTP {resp.status_code}, expected {' or '.join(map(str, allowed))}",
        )
        ok("session-gone", f"POST with old session id -> {resp.status_code}")


def leaf_exceptions(e: BaseException) -> list[BaseException]:
    if isinstance(e, BaseExceptionGroup):
        return [leaf for sub in e.exceptions for leaf in leaf_exceptions(sub)]
    return [e]


def main() -> int:
    if len(sys.argv) < 3 or sys.argv[2] not in ("everything", "memory"):
        print("usage: client.py URL (everything|memory)", file=sys.stderr)
        return 2
    url, mode = sys.argv[1], sys.argv[2]

    async def guarded() -> None:
        with anyio.fail_after(OVERALL_TIMEOUT_S):
            await run(url, mode)

    try:
        anyio.run(guarded)
    except BaseException as e:  # noqa: BLE001 - report anything, including groups and timeouts
        leaves = leaf_exceptions(e)
        for leaf in leaves:
            if isinstance(leaf, StepError):
                print(f"FAIL {current_step}: {leaf}", file=sys.stderr)
            elif isinstance(leaf, TimeoutError):
                print(f"FAIL {current_step}: timed out after {OVERALL_TIMEOUT_S:g} s (mode {mode}, {url})", file=sys.stderr)
            else:
                hint = " (the endpoint answered HTTP 404)" if "Session terminated" in str(leaf) else ""
                print(f"FAIL {current_step}: {type(leaf).__name__}: {leaf}{hint}", file=sys.stderr)
                traceback.print_exception(leaf, limit=-4, chain=False, file=sys.stderr)
        return 1
    ok("done", f"mode {mode}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
