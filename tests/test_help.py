"""`v4c ... --help` for every command, as a user reads it: whole sentences re-flowed to the
width (no break the source's line wrapping put mid-sentence), values named as argparse
names them, and nothing a user cannot act on (Python types, internal module names,
pointers to documents a clone does not have)."""

from __future__ import annotations

import re

import pytest
import typer

from v4c.cli import app, main
from v4c.cli.help import tidy


def _commands(command, path=()):
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _commands(sub, (*path, name))


COMMANDS = list(_commands(tidy(typer.main.get_command(app))))


def _help(path, capsys) -> str:
    with pytest.raises(SystemExit) as done:
        main([*path, "--help"])
    assert done.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("path, command", COMMANDS, ids=[" ".join(p) or "v4c" for p, _ in COMMANDS])
def test_help_reads_as_text(path, command, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    text = _help(path, capsys)
    for noise in ("<bool>", "<str>", "<int", "<path>", "{", "18446744073709551615", "§",
                  "../shared", "DESIGN.md", "v4c.cli", "v4c.runtime"):  # fmt: skip
        assert noise not in text, (noise, text)
    assert max(map(len, text.splitlines())) <= 80
    usage = text.splitlines()[0]
    for param in command.params:
        if param.param_type_name == "argument":  # SPEC, [NAME], FILES... in the usage line
            assert re.search(rf"(^| |\[){param.metavar}(\.\.\.)?(\]| |$)", usage), usage


@pytest.mark.parametrize("path, command", COMMANDS, ids=[" ".join(p) or "v4c" for p, _ in COMMANDS])
def test_no_sentence_is_broken_by_the_source(path, command, capsys):
    """On a wide terminal each option's help and each paragraph of the command's text is one
    line: a line break inside them came from the source, not from the terminal's width."""
    with pytest.raises(SystemExit):
        command.main(["--help"], prog_name="v4c", terminal_width=2000, max_content_width=2000)
    lines = capsys.readouterr().out.splitlines()
    texts = [p.help for p in command.params if getattr(p, "help", None)]
    texts += re.split(r"\n\s*\n", (command.help or "").strip())
    for text in texts:
        flat = " ".join(text.split())
        assert any(flat in line for line in lines), (flat, lines)


AUTO = ("auto", "stop once that is slower than plain decoding", "said in the summary",
        "mtp: speculate to the end", "off: never",
        "Greedy decoding gives the same tokens in every mode")  # fmt: skip
SERVED = ("mtp: greedy requests draft with the MTP block", "(the same tokens)", "off (the default)")


@pytest.mark.parametrize("path, said", [(("run",), AUTO), (("chat",), AUTO), (("bench",), AUTO),
                                        (("serve",), SERVED)])  # fmt: skip
def test_speculative_help_says_what_each_mode_does_and_that_outputs_agree(path, said, capsys):
    """What a user is promised on every command that speculates: what each mode does (auto
    runs while it pays; serve has mtp and off) and that the tokens are the same."""
    with pytest.raises(SystemExit):
        main([*path, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for words in said:
        assert words in text, (words, text)
