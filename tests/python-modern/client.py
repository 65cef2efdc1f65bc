"""Modern-era (MCP 2026-07-28) client driver for Berth's e2e tests: the official Python SDK `mcp` 2.3.0.

Usage:
    tests/python-modern/.venv/bin/python tests/python-modern/client.py \
        [--negotiation auto|pinned] [--expect-version V] [--timeout S] URL MODE [JSON]

  URL            Streamable HTTP endpoint, e.g. http://127.0.0.1:PORT/mcp/<server-name>
  --negotiation  auto   (default) Client(mode="auto"): probes `server/discover` at 2026-07-28 first,
                        falls back to the 2025 `initialize` handshake on a legacy answer.
                 pinned Client(mode="2026-07-28"): adopts 2026-07-28 with NO probe (the SDK synthesizes a
                        DiscoverResult locally; the first wire request is the scenario's first request).
  --expect-version V    fail unless the negotiated protocol version is exactly V (e.g. 2026-07-28)
  --timeout S    hard deadline for the whole MODE (default 60 s); hitting it is a failure, never a hang

MODEs (JSON is an optional object; defaults fit tests/python-modern/ref_server.py and
tests/node-modern/ref_server.mjs):
  era       connect only; report the negotiated version/era (scenario e).                JSON unused
  call      list tools, check TOOL is listed, call it, print the result text (scenario a).
            JSON {"tool": "echo", "args": {"message": "hello"}, "expect": null}
            "expect": if given, the result text must equal it.
  progress  call TOOL with a progress callback; count notifications/progress (scenario b).
            JSON {"tool": "slow", "args": {"seconds": 1}, "min": 1}   fails if fewer than "min" arrived
  cancel    start TOOL, cancel it once "after" seconds passed or the first progress arrived,
            whichever is first, and check the cancellation returned within "within" seconds; then
            make one more request (tools/list) to show the client is still usable (scenario c).
            JSON {"tool": "slow", "args": {"seconds": 30}, "after": 0.5, "within": 5,
                  "stats_tool": null, "stats_delay": 0.5}
            "stats_tool": a tool to call afterwards (e.g. "stats" on the ref servers); its text is
            reported as "stats" so a test can check the server saw the cancellation.
  listen    open subscriptions/listen {toolsListChanged: true}, call TRIGGER, wait for
            notifications/tools/list_changed on the listen stream (scenario d).
            JSON {"trigger": "trigger_tools_changed", "args": {}, "wait": 10}
  all       era, call echo, call add(2,3)=="5", progress, cancel (with stats_tool "stats"), listen,
            against a ref server. Prints {"ok": true, "results": {mode: summary, ...}}.

Output: ONE JSON line on stdout. Success: {"ok": true, "client": "python-mcp-2.3.0", "negotiation",
"mode", "protocolVersion", "era": "modern"|"legacy", ...mode fields}; exit 0.
Failure: {"ok": false, "mode", "error"} on stdout, "client.py: FAIL <mode>: <why>" on stderr; exit 1.
(exit 2: bad command line.)
Mode fields: call -> tools, tool, text, isError; progress -> progress_notifications, last_progress,
text; cancel -> result: "cancelled", cancel_ms, progress_before_cancel, after_cancel_tools, stats;
listen -> honored, notification, received, ms; era -> discover, serverInfo, supportedVersions.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from typing import Any

import anyio
from mcp import Client
from mcp.client.subscriptions import ToolsListChanged
from mcp_types import Implementation
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

PIN = "2026-07-28"
CLIENT_ID = "python-mcp-2.3.0"


class Fail(Exception):
    pass


def text_of(result: Any) -> str:
    return "".join(getattr(c, "text", "") for c in result.content if getattr(c, "type", None) == "text")


def era_fields(client: Client) -> dict[str, Any]:
    v = client.protocol_version
    out: dict[str, Any] = {"protocolVersion": v, "era": "modern" if v in MODERN_PROTOCOL_VERSIONS else "legacy"}
    return out


async def mode_era(client: Client, _cfg: dict[str, Any]) -> dict[str, Any]:
    s = client.session
    if client.mode == "auto" or client.protocol_version not in MODERN_PROTOCOL_VERSIONS:
        info = s.server_info
        dr = s.discover_result
        return {
            "discover": "at connect" if dr else "none (legacy initialize)",
            "serverInfo": info.model_dump(exclude_none=True) if info else None,
            "supportedVersions": list(dr.supported_versions) if dr else None,
        }
    # Pinned: the SDK adopted 2026-07-28 without any wire traffic; ask the server explicitly.
    raw = await s.send_discover(PIN)
    return {
        "discover": "explicit (pinned mode sends none at connect)",
        "serverInfo": (raw.get("_meta") or {}).get("io.modelcontextprotocol/serverInfo"),
        "supportedVersions": raw.get("supportedVersions"),
    }


async def mode_call(client: Client, cfg: dict[str, Any]) -> dict[str, Any]:
    tool = cfg.get("tool", "echo")
    args = cfg.get("args", {"message": "hello"} if tool == "echo" else {})
    listed = await client.list_tools()
    names = [t.name for t in listed.tools]
    if tool not in names:
        raise Fail(f"tool {tool!r} not in tools/list: {names}")
    result = await client.call_tool(tool, args)
    text = text_of(result)
    if result.is_error:
        raise Fail(f"tools/call {tool} returned isError: {text!r}")
    if cfg.get("expect") is not None and text != str(cfg["expect"]):
        raise Fail(f"tools/call {tool} returned {text!r}, expected {cfg['expect']!r}")
    return {"tools": names, "tool": tool, "text": text, "isError": bool(result.is_error)}


async def mode_progress(client: Client, cfg: dict[str, Any]) -> dict[str, Any]:
    tool = cfg.get("tool", "slow")
    args = cfg.get("args", {"seconds": 1})
    seen: list[dict[str, Any]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append({"progress": progress, "total": total, "message": message})

    result = await client.call_tool(tool, args, progress_callback=on_progress)
    text = text_of(result)
    if result.is_error:
        raise Fail(f"tools/call {tool} returned isError: {text!r}")
    if len(seen) < int(cfg.get("min", 1)):
        raise Fail(f"only {len(seen)} progress notifications arrived (want >= {cfg.get('min', 1)})")
    return {"tool": tool, "progress_notifications": len(seen), "last_progress": seen[-1] if seen else None, "text": text}


async def mode_cancel(client: Client, cfg: dict[str, Any]) -> dict[str, Any]:
    tool = cfg.get("tool", "slow")
    args = cfg.get("args", {"seconds": 30})
    after = float(cfg.get("after", 0.5))
    within = float(cfg.get("within", 5))
    first_progress = anyio.Event()
    progress_count = 0
    outcome: dict[str, Any] = {}

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        nonlocal progress_count
        progress_count += 1
        first_progress.set()

    async def run_call(scope: anyio.CancelScope) -> None:
        with scope:
            try:
                r = await client.call_tool(tool, args, progress_callback=on_progress)
                outcome["completed"] = text_of(r)
            except Exception as e:  # noqa: BLE001 - reported as a failure below
                outcome["error"] = f"{type(e).__name__}: {e}"

    call_scope = anyio.CancelScope()
    async with anyio.create_task_group() as tg:
        tg.start_soon(run_call, call_scope)
        with anyio.move_on_after(after):
            await first_progress.wait()
        if "completed" in outcome or "error" in outcome:
            raise Fail(f"the call ended before it could be cancelled: {outcome}")
        t0 = time.monotonic()
        call_scope.cancel()  # the anyio cancel: the SDK aborts the in-flight POST (closes the stream)
    cancel_ms = round((time.monotonic() - t0) * 1000)
    if not call_scope.cancelled_caught:
        raise Fail(f"cancel did not take effect: {outcome}")
    if cancel_ms > within * 1000:
        raise Fail(f"cancellation took {cancel_ms} ms (> {within} s): the client hung")
    # The client must still be usable after a cancelled request.
    with anyio.fail_after(within):
        after_tools = [t.name for t in (await client.list_tools(cache_mode="bypass")).tools]
    res: dict[str, Any] = {
        "result": "cancelled",
        "tool": tool,
        "cancel_ms": cancel_ms,
        "progress_before_cancel": progress_count,
        "after_cancel_tools": len(after_tools),
        "stats": None,
    }
    if cfg.get("stats_tool"):
        await anyio.sleep(float(cfg.get("stats_delay", 0.5)))
        res["stats"] = text_of(await client.call_tool(cfg["stats_tool"], {}))
    return res


async def mode_listen(client: Client, cfg: dict[str, Any]) -> dict[str, Any]:
    trigger = cfg.get("trigger", "trigger_tools_changed")
    args = cfg.get("args", {})
    wait = float(cfg.get("wait", 10))
    async with client.listen(tools_list_changed=True) as sub:
        honored = sub.honored.model_dump(by_alias=True, exclude_none=True)
        if not honored.get("toolsListChanged"):
            raise Fail(f"server did not honor toolsListChanged: honored={honored}")
        t0 = time.monotonic()
        r = await client.call_tool(trigger, args)
        if r.is_error:
            raise Fail(f"trigger tool {trigger} returned isError: {text_of(r)!r}")
        with anyio.move_on_after(wait) as waited:
            async for event in sub:
                if isinstance(event, ToolsListChanged):
                    break
            else:
                raise Fail("the listen stream ended before notifications/tools/list_changed arrived")
        if waited.cancelled_caught:
            raise Fail(f"no notifications/tools/list_changed on the listen stream within {wait} s")
        ms = round((time.monotonic() - t0) * 1000)
    return {
        "honored": honored,
        "trigger": trigger,
        "notification": "notifications/tools/list_changed",
        "received": True,
        "ms": ms,
    }


MODES = {"era": mode_era, "call": mode_call, "progress": mode_progress, "cancel": mode_cancel, "listen": mode_listen}

ALL_STEPS: list[tuple[str, str, dict[str, Any]]] = [
    ("era", "era", {}),
    ("call_echo", "call", {"tool": "echo", "args": {"message": "hello"}, "expect": "hello"}),
    ("call_add", "call", {"tool": "add", "args": {"a": 2, "b": 3}, "expect": "5"}),
    ("progress", "progress", {"tool": "slow", "args": {"seconds": 1}, "min": 5}),
    ("cancel", "cancel", {"tool": "slow", "args": {"seconds": 30}, "stats_tool": "stats"}),
    ("listen", "listen", {}),
]


async def run(url: str, negotiation: str, mode: str, cfg: dict[str, Any], expect_version: str | None) -> dict[str, Any]:
    client_mode = "auto" if negotiation == "auto" else PIN
    info = Implementation(name="berth-e2e-python-modern", version="mcp-2.3.0")
    async with Client(url, mode=client_mode, client_info=info) as client:
        head = {"ok": True, "client": CLIENT_ID, "negotiation": negotiation, "mode": mode, **era_fields(client)}
        if expect_version and client.protocol_version != expect_version:
            raise Fail(f"negotiated protocol version {client.protocol_version!r}, expected {expect_version!r}")
        if mode == "all":
            results = {}
            for name, m, c in ALL_STEPS:
                try:
                    results[name] = await MODES[m](client, c)
                except Fail as e:
                    raise Fail(f"step {name}: {e}") from e
            return {**head, "results": results}
        return {**head, **await MODES[mode](client, cfg)}


def main() -> int:
    p = argparse.ArgumentParser(usage=__doc__)
    p.add_argument("--negotiation", choices=["auto", "pinned"], default="auto")
    p.add_argument("--expect-version")
    p.add_argument("--timeout", type=float, default=60.0)
    p.add_argument("url")
    p.add_argument("mode", choices=[*MODES, "all"])
    p.add_argument("json", nargs="?", default="{}")
    a = p.parse_args()
    try:
        cfg = json.loads(a.json)
        if not isinstance(cfg, dict):
            raise ValueError("not an object")
    except ValueError as e:
        print(f"client.py: JSON argument must be an object: {e}", file=sys.stderr)
        return 2

    async def guarded() -> dict[str, Any]:
        with anyio.fail_after(a.timeout if a.timeout > 0 else math.inf):
            return await run(a.url, a.negotiation, a.mode, cfg, a.expect_version)

    try:
        out = anyio.run(guarded)
    except BaseException as e:  # noqa: BLE001 - every failure becomes one clear line
        if isinstance(e, KeyboardInterrupt):
            raise
        err = e
        # Unwrap anyio/ExceptionGroup wrappers to the first real cause.
        while isinstance(err, BaseExceptionGroup) and err.exceptions:
            err = err.exceptions[0]
        why = str(err) if isinstance(err, Fail) else f"{type(err).__name__}: {err}"
        if isinstance(err, TimeoutError) and not str(err):
            why = f"TimeoutError: mode did not finish within {a.timeout} s"
        print(json.dumps({"ok": False, "client": CLIENT_ID, "negotiation": a.negotiation, "mode": a.mode, "error": why}))
        print(f"client.py: FAIL {a.mode} ({a.negotiation}) against {a.url}: {why}", file=sys.stderr)
        return 1
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
