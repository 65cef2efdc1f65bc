#!/usr/bin/env python3
"""One MCP session (official Python SDK client) with one hosted reference server.

Used by crates/berth/tests/reference_servers.rs.

Usage: reference_client.py URL SERVER PARAMS_JSON

  URL     a Streamable HTTP endpoint (.../mcp/<name>)
  SERVER  which reference server serves it: everything, memory, filesystem,
          time, git or fetch
  PARAMS  a JSON object with what the test prepared for that server:
            everything  {"message"}
            memory      {"tag"}                       unique names for this run
            filesystem  {"file", "text", "read_dir", "write_file", "write_text",
                         "read_only_write"?}          read_only_write: a path the
                                                      server may name but must not
                                                      be able to write (sandbox)
            time        {}
            git         {"repo", "message"}           a repository with one commit
            fetch       {"url", "text", "denied_url"?}  a page whose text is `text`;
                                                      denied_url: one the server must
                                                      not reach (sandbox egress)

The session initializes, lists tools, calls the server's tools and checks their
results, then closes the transport (DELETE, which must answer 2xx). Prints one
"ok <step>: <detail>" line per step on stdout and exits 0; on failure prints
"FAIL <step>: <reason>" on stderr and exits 1.

Environment: BERTH_E2E_TIMEOUT_MS, the deadline for the whole script (default 60000).
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from datetime import datetime, timedelta, timezone
from typing import Any

import anyio
import httpx
from mcp import ClientSession, types
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

REQUEST_TIMEOUT = timedelta(seconds=30)
OVERALL_TIMEOUT_S = float(os.environ.get("BERTH_E2E_TIMEOUT_MS", "60000")) / 1000


class StepError(Exception):
    pass


current_step = "startup"


def begin(step: str) -> None:
    global current_step
    current_step = step


def ok(step: str, detail: str = "") -> None:
    print(f"ok {step}: {detail}" if detail else f"ok {step}", flush=True)


def check(cond: Any, message: str) -> None:
    if not cond:
        raise StepError(message)


def short(s: Any, n: int = 200) -> str:
    s = " ".join(str(s).split())
    return s if len(s) <= n else s[:n] + "…"


def texts(result: types.CallToolResult) -> str:
    return "\n".join(c.text for c in result.content if isinstance(c, types.TextContent))


async def call(session: ClientSession, tool: str, args: dict[str, Any]) -> str:
    """Calls `tool`; its text, which must not be an error."""
    begin(f"call-{tool}")
    result = await session.call_tool(tool, args)
    text = texts(result)
    check(not result.isError, f"{tool} returned isError: {short(text, 600)}")
    return text


async def call_failing(session: ClientSession, tool: str, args: dict[str, Any]) -> str:
    """Calls `tool`, which must fail (isError); the error text."""
    result = await session.call_tool(tool, args)
    text = texts(result)
    check(result.isError, f"{tool} {short(args)} succeeded but should have failed: {short(text)}")
    return text


def json_result(result_text: str, what: str) -> Any:
    try:
        return json.loads(result_text)
    except ValueError as e:
        raise StepError(f"{what}: result is not JSON: {short(result_text)}") from e


async def run_everything(session: ClientSession, p: dict[str, Any]) -> None:
    text = await call(session, "echo", {"message": p["message"]})
    check(p["message"] in text, f"echo result lacks the message: {short(text)}")
    ok("call-echo", short(text))


async def run_memory(session: ClientSession, p: dict[str, Any]) -> None:
    tag = p["tag"]
    entities = [
        {"name": f"berth-gateway-{tag}", "entityType": "gateway", "observations": [f"hosts servers {tag}"]},
        {"name": f"berth-sandbox-{tag}", "entityType": "sandbox", "observations": ["isolates them"]},
    ]
    relation = {"from": entities[0]["name"], "to": entities[1]["name"], "relationType": "runs servers in"}
    await call(session, "create_entities", {"entities": entities})
    await call(session, "create_relations", {"relations": [relation]})
    ok("create", f"{len(entities)} entities, 1 relation")
    graph = json_result(await call(session, "read_graph", {}), "read_graph")
    by_name = {e["name"]: e for e in graph["entities"]}
    for e in entities:
        got = by_name.get(e["name"])
        check(got, f"read_graph lacks entity {e['name']}: {short(graph)}")
        check(got["observations"] == e["observations"], f"{e['name']} has observations {got['observations']}")
    check(relation in graph["relations"], f"read_graph lacks relation {relation}: {short(graph['relations'])}")
    ok("call-read_graph", f"{len(graph['entities'])} entities, {len(graph['relations'])} relations")


async def run_filesystem(session: ClientSession, p: dict[str, Any]) -> None:
    text = await call(session, "read_text_file", {"path": p["file"]})
    check(text == p["text"], f"read_text_file returned {short(text)!r}, expected {p['text']!r}")
    ok("call-read_text_file", short(text))

    text = await call(session, "list_directory", {"path": p["read_dir"]})
    name = os.path.basename(p["file"])
    check(f"[FILE] {name}" in text.splitlines(), f"list_directory lacks [FILE] {name}: {short(text)}")
    ok("call-list_directory", short(text))

    text = await call(session, "write_file", {"path": p["write_file"], "content": p["write_text"]})
    check("Successfully wrote" in text, f"write_file answered {short(text)}")
    back = await call(session, "read_text_file", {"path": p["write_file"]})
    check(back == p["write_text"], f"read back {short(back)!r}, expected {p['write_text']!r}")
    ok("call-write_file", short(text))

    if p.get("read_only_write"):
        begin("write-read-only")
        text = await call_failing(session, "write_file", {"path": p["read_only_write"], "content": "must not land"})
        ok("write-read-only", f"refused: {short(text)}")


async def run_time(session: ClientSession, p: dict[str, Any]) -> None:
    text = await call(session, "get_current_time", {"timezone": "UTC"})
    got = json_result(text, "get_current_time")
    check(got.get("timezone") == "UTC", f"get_current_time answered timezone {got.get('timezone')!r}: {short(text)}")
    when = datetime.fromisoformat(got["datetime"])
    check(when.utcoffset() == timedelta(0), f"UTC time with offset {when.utcoffset()}: {got['datetime']}")
    skew = abs(when - datetime.now(timezone.utc))
    check(skew < timedelta(minutes=5), f"get_current_time is {skew} away from this clock: {got['datetime']}")
    ok("call-get_current_time", got["datetime"])


async def run_git(session: ClientSession, p: dict[str, Any]) -> None:
    text = await call(session, "git_log", {"repo_path": p["repo"], "max_count": 5})
    check(p["message"] in text, f"git_log lacks the commit message {p['message']!r}: {short(text, 600)}")
    check(text.count("Commit: ") == 1, f"git_log should list exactly one commit: {short(text, 600)}")
    ok("call-git_log", short(text))

    text = await call(session, "git_status", {"repo_path": p["repo"]})
    check("nothing to commit" in text, f"git_status of a clean repository: {short(text, 600)}")
    ok("call-git_status", short(text))


async def run_fetch(session: ClientSession, p: dict[str, Any]) -> None:
    text = await call(session, "fetch", {"url": p["url"]})
    check(p["text"] in text, f"fetch result lacks the page's text {p['text']!r}: {short(text, 600)}")
    ok("call-fetch", short(text))

    if p.get("denied_url"):
        begin("fetch-denied")
        text = await call_failing(session, "fetch", {"url": p["denied_url"]})
        ok("fetch-denied", f"refused: {short(text)}")


RUNNERS = {
    "everything": (run_everything, ["echo"]),
    "memory": (run_memory, ["create_entities", "create_relations", "read_graph"]),
    "filesystem": (run_filesystem, ["read_text_file", "list_directory", "write_file"]),
    "time": (run_time, ["get_current_time", "convert_time"]),
    "git": (run_git, ["git_log", "git_status"]),
    "fetch": (run_fetch, ["fetch"]),
}


class Recorder:
    """httpx response hook remembering every DELETE (session termination)."""

    def __init__(self) -> None:
        self.deletes: list[tuple[str | None, int]] = []

    async def __call__(self, response: httpx.Response) -> None:
        if response.request.method == "DELETE":
            self.deletes.append((response.request.headers.get("mcp-session-id"), response.status_code))


async def run(url: str, server: str, params: dict[str, Any]) -> None:
    runner, tools = RUNNERS[server]
    recorder = Recorder()
    http_client = create_mcp_http_client()
    http_client.event_hooks = {"request": [], "response": [recorder]}
    session_id: str | None = None
    async with http_client:
        begin("connect")
        async with streamable_http_client(url, http_client=http_client) as (read, write, get_session_id):
            async with ClientSession(
                read,
                write,
                read_timeout_seconds=REQUEST_TIMEOUT,
                client_info=types.Implementation(name="berth-reference-client", version="0.1.0"),
            ) as session:
                init = await session.initialize()
                session_id = get_session_id()
                check(session_id, "no Mcp-Session-Id on initialize")
                ok("connect", f"server={init.serverInfo.name}@{init.serverInfo.version} protocol={init.protocolVersion}")

                begin("list-tools")
                names = [t.name for t in (await session.list_tools()).tools]
                missing = [t for t in tools if t not in names]
                check(not missing, f"tools/list lacks {missing}: {names}")
                ok("list-tools", f"{len(names)} tools")

                await runner(session, params)
                begin("terminate-session")
        dels = [status for sid, status in recorder.deletes if sid == session_id]
        check(dels and 200 <= dels[0] < 300, f"closing the session: DELETE answered {dels}")
        ok("terminate-session", f"DELETE -> {dels[0]}")


def leaf_exceptions(e: BaseException) -> list[BaseException]:
    if isinstance(e, BaseExceptionGroup):
        return [leaf for sub in e.exceptions for leaf in leaf_exceptions(sub)]
    return [e]


def main() -> int:
    if len(sys.argv) != 4 or sys.argv[2] not in RUNNERS:
        print(f"usage: reference_client.py URL ({'|'.join(RUNNERS)}) PARAMS_JSON", file=sys.stderr)
        return 2
    url, server, params = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])

    async def guarded() -> None:
        with anyio.fail_after(OVERALL_TIMEOUT_S):
            await run(url, server, params)

    try:
        anyio.run(guarded)
    except BaseException as e:  # noqa: BLE001 - report anything, including groups and timeouts
        for leaf in leaf_exceptions(e):
            if isinstance(leaf, StepError):
                print(f"FAIL {current_step}: {leaf}", file=sys.stderr)
            elif isinstance(leaf, TimeoutError):
                print(f"FAIL {current_step}: timed out after {OVERALL_TIMEOUT_S:g} s ({server}, {url})", file=sys.stderr)
            else:
                print(f"FAIL {current_step}: {type(leaf).__name__}: {leaf}", file=sys.stderr)
                traceback.print_exception(leaf, limit=-4, chain=False, file=sys.stderr)
        return 1
    ok("done", server)
    return 0


if __name__ == "__main__":
    sys.exit(main())
