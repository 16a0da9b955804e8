"""User errors through the real CLI entry point, in process (they fail before a model is
built): each prints one message that says what is wrong and what to do, exits 2, and
never shows a traceback."""

from __future__ import annotations

import io

import pytest

from v4c.cli import main


def fails(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as done:
        main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert done.value.code == 2, err
    assert "Traceback" not in err and err.startswith("error: "), err
    return err


@pytest.fixture
def paths(tmp_path):
    (tmp_path / "a-folder").mkdir()
    (tmp_path / "a-file").write_text("{}")
    return tmp_path / "a-folder", tmp_path / "a-file", tmp_path / "nowhere"


def test_a_path_of_the_wrong_kind_is_not_reported_as_missing(capsys, paths):
    folder, file, missing = paths
    cases = [
        (("run", "--prompt", "x", "--checkpoint"), file, "is a file, not a checkpoint folder"),
        (("run", "--prompt", "x", "--checkpoint"), missing, "no such checkpoint folder"),
        (("run", "--prompt", "x", "--plan"), file, "is a file, not a plan folder"),
        (("run", "--messages"), folder, "is a folder, not a JSON conversation file"),
        (("run", "--messages"), missing, "no such JSON conversation file"),
        (("spec", "show"), folder, "is a folder, not a spec file"),
        (("spec", "import", "-o", folder / "x.yaml"), folder, "is a folder, not a config.json"),
        (("checkpoint", "convert", "--to", "hf"), file, "is a file, not a checkpoint folder"),
        (("bench",), file, "a-file: not a checkpoint folder; to bench a spec, add --random"),
        (("bench",), missing, "no such checkpoint folder or spec; bench reads"),
        (
            ("bench",),
            "tiny",
            "tiny: not a checkpoint folder; to bench a spec, add --random-weights",
        ),
    ]
    for argv, path, message in cases:
        if argv[:2] == ("checkpoint", "convert"):
            argv, path = (*argv, path, folder / "out"), None
        err = fails(capsys, *argv, *([path] if path is not None else []))
        assert message in err, (argv, err)


def test_a_misspelt_spec_name_gets_the_names_and_a_suggestion(capsys):
    err = fails(capsys, "spec", "show", "flsh")
    assert "flsh: spec file not found; did you mean flash?" in err
    assert "(shipped specs: flash, pro, tiny, variants/flash-16l-64e" in err
    err = fails(capsys, "compile", "zzz.yaml")
    assert "did you mean" not in err and "shipped specs: flash, pro, tiny" in err


def test_prompt_and_messages_get_the_message_for_each_mistake(capsys, paths):
    _, file, _ = paths
    assert "give one of them, not both" in fails(capsys, "run", "--prompt", "x", "--messages", file)
    assert "give the prompt: --prompt TEXT" in fails(capsys, "run")
    assert "(drop --raw)" in fails(capsys, "run", "--messages", file, "--raw")


def test_numerics_against_a_plan_fails_before_anything_is_said(capsys, tmp_path):
    with pytest.raises(SystemExit) as done:
        main(["compile", "tiny", "-o", str(tmp_path / "plan"), "--dtype", "fp32"])
    assert done.value.code in (0, None)
    capsys.readouterr()
    err = fails(
        capsys, "run", "--plan", tmp_path / "plan", "--prompt", "x", "--numerics", "official"
    )
    assert err == (
        "error: --numerics official: the plan was compiled with numerics plain (compile again "
        "with --numerics official to change it)\n"
    )


def test_a_seed_out_of_range_says_the_range(capsys):
    with pytest.raises(SystemExit) as done:
        main(["run", "--prompt", "x", "--seed", str(2**64)])
    assert done.value.code == 2
    assert "from 0 to 2**64 - 1" in capsys.readouterr().err


def test_prompt_file_problems_name_the_line(capsys, tmp_path, monkeypatch):
    bad = tmp_path / "p.jsonl"
    bad.write_text('"ok"\n{"x": 1}\n')
    assert f"{bad}:2: expected a string, a list of messages" in fails(
        capsys, "run", "--prompt-file", bad
    )
    bad.write_text('"ok"\n[{"role": "robot"}]\n')
    assert f"{bad}:2: messages[0]: unknown role 'robot'" in fails(
        capsys, "run", "--prompt-file", bad
    )
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    assert "no prompts" in fails(capsys, "run", "--prompt-file", empty)
    assert "--prompt and --prompt-file: give one" in fails(
        capsys, "run", "--prompt", "x", "--prompt-file", empty
    )
    assert "the ranks cannot share standard input" in fails(
        capsys, "run", "--prompt-file", "-", "--tp", "2"
    )
    monkeypatch.setattr("sys.stdin", io.StringIO("  \n"))
    assert "--prompt -: standard input held no prompt" in fails(capsys, "run", "--prompt", "-")


def test_a_plan_for_another_model_asks_for_its_checkpoint(capsys, tmp_path):
    with pytest.raises(SystemExit):
        main(["compile", "variants/tiny-8k-vocab", "-o", str(tmp_path / "plan"), "--dtype", "fp32"])
    capsys.readouterr()
    err = fails(capsys, "run", "--plan", tmp_path / "plan", "--prompt", "x")
    assert (
        "not the embedded tiny model; pass --checkpoint FOLDER with its weights, or "
        "--random-weights to run it with random ones" in err
    )


def test_a_plan_whose_caches_cannot_fit_says_what_to_compile(capsys, tmp_path, monkeypatch):
    """The engine holds caches for every sequence a plan is compiled for: a plan of 1024
    sequences of 8192 tokens is refused on a 4 GiB machine before anything is made."""
    with pytest.raises(SystemExit):
        main(["compile", "tiny", "-o", str(tmp_path / "plan"), "--max-batch", "1024",
              "--dtype", "fp32"])  # fmt: skip
    capsys.readouterr()
    monkeypatch.setattr("v4c.limits.free_memory", lambda device: 4 << 30)
    err = fails(capsys, "run", "--plan", tmp_path / "plan", "--prompt", "x", "--threads", "1")
    said = f"--plan {tmp_path / 'plan'}: its caches (1024 sequences of 8192 tokens) do not fit"
    assert said in err
    assert "compile it with a smaller --max-batch or --max-seq" in err


@pytest.mark.parametrize("command", ["run", "chat"])
def test_the_model_argument_says_what_it_is_not(capsys, paths, command):
    """MODEL (first, as other engines take it): a spec without --random-weights, a model
    given twice, or a word that names nothing (a prompt put first) is one line each."""
    folder, _, missing = paths
    cases = [
        (("tiny",), "tiny: a spec, not a checkpoint; to run it without one, add --random-weights"),
        (("tiny", "--random-weights", "--spec", "tiny"), "tiny and --spec: give the spec once"),
        (("tiny", "--checkpoint", folder), "tiny and --checkpoint: give the model once"),
        ((folder, "--plan", folder), "and --plan: give the model once"),
        (
            ("Hello",),
            "Hello: no such checkpoint folder, Hugging Face Hub repo id (owner/name) or "
            "spec; the model comes first, a prompt goes in --prompt",
        ),  # fmt: skip
        ((missing / "x.yaml", "--random-weights"), "x.yaml: spec file not found"),
        (("flsh", "--random-weights"), "flsh: spec file not found; did you mean flash?"),
    ]
    prompt = ("--prompt", "x") if command == "run" else ()
    for argv, message in cases:
        err = fails(capsys, command, *argv, *prompt)
        assert message in err, (argv, err)


def test_text_that_is_not_utf8_is_refused_where_it_comes_in(capsys, monkeypatch, tmp_path):
    stdin = io.TextIOWrapper(io.BytesIO(b"Hi\xff\n"), encoding="utf-8")
    monkeypatch.setattr("sys.stdin", stdin)
    assert "--prompt -: standard input is not UTF-8 text" in fails(capsys, "run", "--prompt", "-")
    # undecodable bytes in argv reach Python as lone surrogates
    assert "--prompt: not UTF-8 text (byte 1 of it)" in fails(capsys, "run", "--prompt", "a\udcff")
    assert "an empty spec name: give a spec file" in fails(capsys, "spec", "show", "")
    (tmp_path / "cache").write_text("")
    monkeypatch.setenv("V4C_CACHE_DIR", str(tmp_path / "cache"))
    assert "is a file, not a folder; set V4C_CACHE_DIR" in fails(capsys, "cache", "info")


@pytest.mark.parametrize(
    "argv",
    [
        ("spec", "show"), ("compile",), ("bench",), ("run", "--prompt", "x", "--checkpoint"),
        ("run", "--prompt", "x", "--spec"), ("run", "--prompt", "x", "--plan"),
        ("run", "--messages"), ("run", "--prompt-file"), ("run", "--prompt", "x"),
        ("chat", "--random-weights"),
    ],
)  # fmt: skip
def test_a_name_the_file_system_refuses_is_one_line(capsys, argv):
    """A 300-character name (longer than a file name may be) wherever a path is read: the
    name and the system's reason, exit 2, not an OSError's traceback."""
    name = "a" * 300
    err = fails(capsys, *argv, name)
    assert err.startswith(f"error: {name}") and err.rstrip().endswith(": File name too long")
    assert err.count("\n") == 1
