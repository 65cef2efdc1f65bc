"""What the plan-driven client scripts share (tests/python/federated_client.py,
tests/python/agents_client.py): the plan they read, the one JSON line they print."""

from __future__ import annotations

import json
import sys
import threading
from typing import Any

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
