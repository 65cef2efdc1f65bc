"""What the plan-driven client scripts share (tests/python/federated_client.py,
tests/python/agents_client.py): the plan they read, the one JSON line they print,
and the deadline and error reporting around their run (serve_plan)."""

from __future__ import annotations

import json
import os
import sys
import threading
from typing import Any, Awaitable, Callable

import anyio
import httpx
from mcp import types

DEADLINE_S = float(os.environ.get("BERTH_E2E_TIMEOUT_MS") or "60000") / 1000
# Past the deadline plus this grace a watchdog thread ends the process even if
# the event loop is stuck (e.g. in a cleanup that never returns).
HARD_GRACE_S = 3.0

_printed = threading.Lock()


class StepError(Exception):
    pass


def emit(line: dict[str, Any]) -> bool:
    """Print the one JSON line; later attempts (e.g. the watchdog's) are dropped."""
    if not _printed.acquire(blocking=False):
        return False
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()
    return True


def check(cond: Any, message: str) -> None:
    if not cond:
        raise StepError(message)


def short(s: Any, n: int = 300) -> str:
    s = " ".join(str(s).split())
    return s if len(s) <= n else s[:n] + "…"


def load_plan(raw: str) -> dict[str, Any]:
    try:
        plan = json.loads(raw)
    except ValueError as e:
        raise StepError(f"PLAN_JSON is not JSON: {e}") from e
    check(isinstance(plan, dict), "PLAN_JSON must be an object")
    check(isinstance(plan.get("expect_tools", []), list), "expect_tools must be a list")
    check(isinstance(plan.get("calls", []), list), "calls must be a list")
    for c in plan.get("calls", []) + ([plan["sampling"]] if plan.get("sampling") else []):
        check(isinstance(c, dict) and isinstance(c.get("tool"), str), f"each call needs a tool name: {c}")
        check(isinstance(c.get("args", {}), dict), f"args of {c['tool']} must be an object")
    check(isinstance(plan.get("headers", {}), dict), "headers must be an object")
    return plan


def first_text(result: types.CallToolResult) -> str | None:
    for c in result.content:
        if isinstance(c, types.TextContent):
            return c.text
    return None


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
    msg = f"{type(e).__name__}: {e}"
    cause = e.__cause__  # SDKs wrap transport errors
    if cause is not None and str(cause) != str(e):
        msg += f" (cause: {type(cause).__name__}: {cause})"
    return msg


def serve_plan(
    script: str,
    run: Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]],
    current_step: Callable[[], str],
    runner: Callable[[Callable[[], Awaitable[dict[str, Any]]]], dict[str, Any]],
) -> int:
    """The script's main: reads URL and PLAN_JSON from argv, runs `run` under
    the deadline (with `runner`, e.g. anyio.run) and a watchdog past it, and
    prints the one result line (failures name `current_step()`)."""

    def fail_line(error: str) -> dict[str, Any]:
        return {"ok": False, "step": current_step(), "error": error}

    if len(sys.argv) != 3:
        emit({"ok": False, "step": "usage", "error": f"usage: {script} URL PLAN_JSON"})
        return 2
    url = sys.argv[1]
    try:
        plan = load_plan(sys.argv[2])
    except StepError as e:
        emit({"ok": False, "step": "plan", "error": str(e)})
        return 2

    def watchdog() -> None:
        if emit(fail_line(f"hard deadline: no result after {DEADLINE_S + HARD_GRACE_S:g} s")):
            os._exit(1)

    timer = threading.Timer(DEADLINE_S + HARD_GRACE_S, watchdog)
    timer.daemon = True
    timer.start()

    async def guarded() -> dict[str, Any]:
        with anyio.fail_after(DEADLINE_S):
            return await run(url, plan)

    try:
        out = runner(guarded)
    except BaseException as e:  # noqa: BLE001 - report anything, groups and timeouts included
        errs = leaves(e)
        # A StepError is the real cause; cancellations around it are noise.
        errs = [x for x in errs if isinstance(x, StepError)] or errs
        emit(fail_line("; ".join(describe(x) for x in errs)))
        return 1
    emit(out)
    return 0
