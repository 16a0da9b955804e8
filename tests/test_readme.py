"""Every command of the README's `sh` blocks, so the README cannot drift from the CLI.

Each line runs as written (`v4c ...` through the real entry point in this process, other
commands in a shell), in order, in a folder of its own holding `specs/` and the two input
files the README's examples name (`chat.json`, `config.json`); it must exit 0, or the code
its comment states ("exit 2"; `diff` exits 1 when the files differ), and print what a
`prints:` comment says it prints. A line that cannot run on a CPU in a test's time is in
`NOT_RUN` with the reason, and is still parsed by the CLI, so every option it names exists
and every value it gives is accepted.
"""

from __future__ import annotations

import glob
import io
import json
import os
import re
import shlex
import subprocess

import pytest
import typer

from tests.conftest import ROOT
from v4c.cli import app, main
from v4c.cli.help import tidy
from v4c.envs import CACHE_DIR

pytestmark = pytest.mark.slow

NOT_RUN = {  # a line's start -> why it is only parsed here
    "python3 -m venv": "the set-up itself, which .ci/run runs on a clean checkout",
    ". .venv/bin/activate && ruff": "the test suite itself, which .ci/run runs",
    "torchrun": "processes over the real checkpoints (hundreds of GB)",
    "v4c serve": "a server runs until it is stopped: tests/serve runs it in process",
    "v4c bench --serve": "a serving benchmark: minutes on two cores (tests/serve)",
    "v4c run --checkpoint deepseek-ai/": "the real checkpoint from the Hub (see test_hub.py)",
    'v4c run --prompt "Hi" --checkpoint ~/': "the real V4-Flash checkpoint",
    "v4c bench specs/variants/flash-2l-slice.yaml": "a GPU (the README says: minutes on a CPU)",
    "v4c run --tp 2": "ranks: tests/runtime/test_run_cli.py runs two",
    "v4c run --plan build/t22": "four ranks: minutes on two cores",
    "v4c bench tiny --random-weights --tp 2": "ranks: minutes on two cores",
    "v4c bench tiny --random-weights --prompt-len 64": "minutes on two cores: test_bench.py",
    "v4c bench tiny --random-weights --draft-tokens 2": "minutes on two cores: test_bench.py",
    "v4c compile specs/flash.yaml -o build/flash --target": "minutes of sm_90 builds, which need "
    "the Triton compiler and so no TRITON_INTERPRET: tests/codegen/test_lens.py builds the slice",
    "v4c bench tiny --random-weights --target": "sm_90 builds outside the interpreter: "
    "tests/codegen/test_lens.py runs it",
}
CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]


def readme_commands() -> list[tuple[str, str]]:
    """(command line, its comment) of every line of every `sh` block, continuations joined."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    lines = []
    for block in re.findall(r"```sh\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            command, _, comment = line.partition("  #")
            if command.strip():
                lines.append((" ".join(command.split()), comment.strip()))
    return lines


def parse_only(argv: list[str]) -> None:
    """Parse `v4c argv` as the CLI would (options and values checked), running nothing."""
    command, args, name = tidy(typer.main.get_command(app)), list(argv), "v4c"
    while getattr(command, "commands", None) and args and args[0] in command.commands:
        name = args.pop(0)
        command = command.commands[name]
    command.make_context(name, args)


@pytest.fixture
def folder(tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    os.symlink(ROOT / "specs", work / "specs")
    (work / "chat.json").write_text(json.dumps(CHAT))
    with pytest.raises(SystemExit):
        main(["spec", "export", "tiny", "--format", "hf", "-o", str(work / "config.json")])
    monkeypatch.chdir(work)
    monkeypatch.setenv(CACHE_DIR, str(tmp_path / "cache"))  # `v4c cache clear` clears this
    monkeypatch.setenv("V4C_THREADS", "1")
    monkeypatch.setattr("sys.stdin", io.StringIO("/exit\n"))  # `v4c chat` ends at once
    return work


def test_every_readme_command(folder, capsys):
    commands = readme_commands()
    assert len(commands) > 30 and sum(c.startswith("v4c ") for c, _ in commands) > 25
    for line, comment in commands:
        skip = next((why for start, why in NOT_RUN.items() if line.startswith(start)), None)
        args = shlex.split(line)
        if skip is not None:
            for part in line.split("&&"):
                words = shlex.split(part)
                at = next((i for i, w in enumerate(words) if w == "v4c"), None)
                if at is not None:  # `torchrun ... -m v4c run ...` too
                    parse_only([os.path.expanduser(w) for w in words[at + 1 :]])
            continue
        want = 2 if "exit 2" in comment else (1 if args[0] == "diff" else 0)
        if args[0] == "v4c":
            argv = [p for a in args[1:] for p in (sorted(glob.glob(a)) if "*" in a else [a])]
            with pytest.raises(SystemExit) as done:
                main(argv)
            code, out = done.value.code or 0, capsys.readouterr()
            output = out.out + out.err
        else:
            ran = subprocess.run(line, shell=True, capture_output=True, text=True, timeout=60)
            code, output = ran.returncode, ran.stdout + ran.stderr
        assert code == want, (line, code, output[-2000:])
        assert "Traceback" not in output, (line, output)
        if "prints: " in comment:
            claim = comment.split("prints: ", 1)[1].removeprefix("... ")
            assert claim in output, (line, claim, output[-2000:])


def _help_texts(command, name: str = "v4c"):
    """(command name, help text) of every command and option of the CLI."""
    yield name, command.help or ""
    for param in command.params:
        yield name, getattr(param, "help", None) or ""
    for sub, child in (getattr(command, "commands", None) or {}).items():
        yield from _help_texts(child, f"{name} {sub}")


def test_every_document_the_readme_and_help_point_at_is_in_the_clone():
    """The README's links, the docs' links and the `docs/*.md` a `--help` names are files
    of this checkout; nothing points at a design document or section (§) a clone lacks."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    assert {p.name for p in pages[1:]} >= {"architecture.md", "numerics.md", "kernels.md"}
    linked, named = set(), set()
    for page in pages:
        text = page.read_text(encoding="utf-8")
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
            if not re.match(r"[a-z]+://", target):
                assert (page.parent / target).is_file(), (page.name, target)
                linked.add(target)
        assert "DESIGN.md" not in text and "V4_REFERENCE" not in text and "§" not in text
    for name, text in _help_texts(typer.main.get_command(app)):
        for target in re.findall(r"docs/[\w-]+\.md", text):
            assert (ROOT / target).is_file(), (name, target)
            named.add(target)
        assert "DESIGN.md" not in text and "§" not in text, name
    assert {"docs/architecture.md", "docs/numerics.md", "docs/kernels.md"} <= linked
    assert "docs/numerics.md" in named  # compile --numerics points there
