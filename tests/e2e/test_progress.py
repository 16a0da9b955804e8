"""The bars of long work, through the real command with its stderr on a pseudo terminal and
its stdout in a file (as `v4c run ... > out.jsonl` in a terminal): a long prefill in `run`
(a plan of 16-token prefill steps, so a 45-token prompt takes three) and `bench`'s stages.

The bar is drawn on the terminal only: stdout holds exactly what it holds when nothing is a
terminal (the JSON, the figures), and with stderr in a pipe no bar is drawn at all.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from tests.e2e.conftest import cli_env

pytestmark = pytest.mark.slow

LONG_PROMPT = "word " * 40  # 45 tokens in the chat encoding: 3 steps of 16
RUN = ["--prompt", LONG_PROMPT, "--max-new-tokens", "2", "--temperature", "0", "--json"]
ESC = b"\x1b["  # a terminal control sequence: a bar is being drawn
PREFILL_BAR = b"prefill " + ESC  # the bar's label, then the bar in colour


def text(shown: bytes) -> str:
    """What the terminal showed, its control sequences (colours, cursor moves) left out."""
    return re.sub(rb"\x1b\[[0-9;?]*[A-Za-z]", b"", shown).decode()


def on_a_terminal(argv: list[str], env: dict[str, str], out) -> tuple[int, bytes]:
    """Run `v4c argv` with stderr on a pseudo terminal and stdout into the file `out`:
    (exit code, what the terminal showed)."""
    terminal, end = os.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "v4c", *argv], stdin=subprocess.DEVNULL, stdout=out, stderr=end,
        env={**env, "TERM": "xterm", "COLUMNS": "120"},
    )  # fmt: skip
    os.close(end)
    shown = b""
    while True:
        try:
            chunk = os.read(terminal, 4096)
        except OSError:  # the terminal's other end closed: the process ended
            break
        if not chunk:
            break
        shown += chunk
    os.close(terminal)
    return proc.wait(timeout=300), shown


@pytest.fixture(scope="module")
def plan16(cache, tmp_path_factory):
    """The tiny model compiled for prefill steps of at most 16 tokens."""
    folder = tmp_path_factory.mktemp("plan16")
    made = subprocess.run(
        [sys.executable, "-m", "v4c", "compile", "tiny", "-o", str(folder), "--max-tokens", "16",
         "--max-seq", "256", "--dtype", "fp32", "--weights", "bf16", "--max-draft", "0"],
        capture_output=True, text=True, env=cli_env(cache, folder / "home"), timeout=300,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    return folder


def test_a_long_prefill_shows_a_bar_on_the_terminal_only(cache, plan16, tmp_path):
    env = cli_env(cache, tmp_path / "home")
    argv = ["run", "--plan", str(plan16), *RUN]
    with open(tmp_path / "out", "wb") as out:
        code, shown = on_a_terminal(argv, env, out)
    assert code == 0, shown[-600:]
    assert b"[prefill: 45 tokens in 3 steps of up to 16]" in shown
    assert PREFILL_BAR in shown and "45/45 tokens" in text(shown)  # the bar, filled
    assert b"Traceback" not in shown
    stdout = (tmp_path / "out").read_bytes()
    piped = subprocess.run([sys.executable, "-m", "v4c", *argv], capture_output=True, env=env)
    assert piped.returncode == 0, piped.stderr
    # stdout is the one JSON line either way (greedy: the same reply); no bar in a pipe
    assert stdout == piped.stdout and ESC not in stdout
    assert json.loads(stdout)["role"] == "assistant"
    assert ESC not in piped.stderr and b"45/45" not in piped.stderr


def test_a_short_prefill_draws_no_bar(cache, plan16, tmp_path):
    argv = ["run", "--plan", str(plan16), "--prompt", "Hi", *RUN[2:]]
    with open(tmp_path / "out", "wb") as out:
        code, shown = on_a_terminal(argv, cli_env(cache, tmp_path / "home"), out)
    assert code == 0, shown[-600:]
    assert b"[prefill:" not in shown and PREFILL_BAR not in shown and b"tokens/s]" in shown


def test_bench_shows_its_stages_on_the_terminal_and_prints_figures_alone(cache, tmp_path):
    env = cli_env(cache, tmp_path / "home")
    argv = ["bench", "tiny", "--random-weights", "--prompt-len", "8", "--decode", "2",
            "--repeat", "2", "--speculative", "off"]  # fmt: skip
    with open(tmp_path / "out", "wb") as out:
        code, shown = on_a_terminal(argv, env, out)
    assert code == 0, shown[-600:]
    # compiling, warm-up, 2 runs, host time: 5 stages, each said on the bar as it starts
    stages = ["compiling deepseek-v4-tiny", "warming up", "run 1/2", "run 2/2", "host time"]
    bar = text(shown)
    for done, stage in enumerate(stages):
        assert re.search(rf"bench: {stage}[^\r\n]* {done}/5 stages", bar), stage
    assert "bench: done" in bar and "5/5 stages" in bar and ESC in shown
    lines = (tmp_path / "out").read_text().splitlines()
    assert lines[0].startswith("deepseek-v4-tiny on cpu: ")
    assert lines[-1].startswith("decode speed: ")
    assert "\x1b" not in "".join(lines)
