"""Run one harness function in a fresh interpreter and hand its JSON result back.

Every push, and every measurement of an in-process system, runs in its own
process: each starts from the environment its row asks for (key, URLs,
driver settings), leaves no threads or connections behind in the harness,
and can be killed when it overruns its time.

Parent side: `call("bench.rows.ours:push", {...}, env=..., timeout=...)`.
Child side: `python -m bench.child MODULE:FUNCTION` reads the keyword
arguments as JSON on stdin and prints the result after `MARKER`.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

MARKER = "BENCH-RESULT "
ROOT = Path(__file__).resolve().parents[1]


class ChildError(RuntimeError):
    """A child process failed, overran its time or returned no result."""


def call(
    target: str,
    arguments: Mapping[str, Any],
    *,
    env: Mapping[str, str],
    timeout: float,
) -> Any:
    """Run `target(**arguments)` in a child process and return what it returned."""
    with tempfile.TemporaryFile("w+") as errors:
        process = subprocess.Popen(
            [sys.executable, "-m", "bench.child", target],
            cwd=ROOT,
            env=dict(env),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
            start_new_session=True,
        )
        try:
            output, _ = process.communicate(json.dumps(dict(arguments)), timeout=timeout)
        except subprocess.TimeoutExpired as expired:
            raise ChildError(f"{target} did not finish within {timeout:.0f}s") from expired
        finally:
            _kill_group(process)
        errors.seek(0)
        error_text = errors.read()
    if process.returncode != 0:
        raise ChildError(last_line(error_text) or f"{target} exited {process.returncode}")
    for line in reversed(output.splitlines()):
        if line.startswith(MARKER):
            return json.loads(line.removeprefix(MARKER))
    raise ChildError(f"{target} returned no result")


def last_line(text: str) -> str:
    """Return the error in `text`: the exception line of its last traceback, else its last line."""
    lines = text.splitlines()
    for index in range(len(lines) - 1, -1, -1):
        if lines[index].startswith("Traceback (most recent call last)"):
            for line in lines[index + 1 :]:
                if line.strip() and not line[0].isspace():
                    return line.strip()
    stripped = [line.strip() for line in lines if line.strip()]
    return stripped[-1] if stripped else ""


def _kill_group(process: subprocess.Popen[str]) -> None:
    """Kill whatever is left of the child's process group (the child and what it started)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    if process.poll() is None:
        process.wait(10)


def main() -> None:
    """Child side: run the function named on the command line."""
    module_name, _, function_name = sys.argv[1].partition(":")
    function = getattr(importlib.import_module(module_name), function_name)
    result = function(**json.loads(sys.stdin.read() or "{}"))
    sys.stdout.write(MARKER + json.dumps(result) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
