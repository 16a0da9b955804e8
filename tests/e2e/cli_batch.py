"""Run many `v4c` command lines through the real CLI entry point in one process.

Why: each command that loads torch pays ~3 s of CPU for the import alone; the bad-input
cases that need torch share one subprocess that imports it once and calls `v4c.cli.main`
for each command line, with that case's environment, capturing what it prints and the exit
code (an exception other than SystemExit is recorded as its traceback, so a test sees it).

Usage: python -m tests.e2e.cli_batch CASES.json RESULTS.json, CASES a list of
{"name", "argv", "env"}; RESULTS maps name -> {"code", "stdout", "stderr"}.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import traceback

from v4c.cli import main


def run_case(argv: list[str], env: dict[str, str]) -> dict:
    saved = dict(os.environ)
    os.environ.update(env)
    out, err = io.StringIO(), io.StringIO()
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main(argv)
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    except BaseException:  # noqa: BLE001 - a traceback is what the tests look for
        err.write(traceback.format_exc())
        code = 1
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return {"code": code, "stdout": out.getvalue(), "stderr": err.getvalue()}


if __name__ == "__main__":
    cases = json.loads(open(sys.argv[1], encoding="utf-8").read())
    results = {c["name"]: run_case(c["argv"], c["env"]) for c in cases}
    with open(sys.argv[2], "w", encoding="utf-8") as f:
        json.dump(results, f)
