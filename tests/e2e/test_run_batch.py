"""`v4c run --prompt-file` and `--prompt -` through the real entry point, in process, on
the tiny checkpoint: a batch gives each prompt the reply it gets alone (greedy; the plan is
batch-invariant), as one JSON line each with its finish reason and token counts."""

from __future__ import annotations

import io
import json

import pytest

from v4c.cli import main
from v4c.runtime.chat.encode import encode_chat
from v4c.runtime.tokenizer import load_tokenizer

GREEDY = ["--temperature", "0", "--max-new-tokens", "3", "--speculative", "off"]


def run(capsys, monkeypatch, tiny, *args: str, stdin: str | None = None) -> tuple[str, str]:
    if stdin is not None:
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    with pytest.raises(SystemExit) as done:
        main(["run", "--checkpoint", str(tiny), "--threads", "1", *GREEDY, *args])
    out = capsys.readouterr()
    assert done.value.code in (0, None), out.err
    return out.out, out.err


def test_a_prompt_file_is_one_batch_of_json_lines(capsys, monkeypatch, tiny, tmp_path):
    file = tmp_path / "prompts.jsonl"
    lines = ['"Hello"', '[{"role": "user", "content": "Why?"}]', '{"prompt": "Hi"}']
    file.write_text("\n".join(lines) + "\n\n")
    out, err = run(capsys, monkeypatch, tiny, "--prompt-file", str(file))
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["index"] for r in rows] == [0, 1, 2]
    assert all(r["finish_reason"] == "length" and r["completion_tokens"] == 3 for r in rows)
    assert "[3 prompts, " in err and "over the batch]" in err
    alone = {}
    for prompt in ("Hello", "Why?", "Hi"):  # each alone, from stdin the middle one
        args = ("--prompt", "-", "--json") if prompt == "Why?" else ("--prompt", prompt, "--json")
        text, _ = run(capsys, monkeypatch, tiny, *args, stdin=f"{prompt}\n")
        alone[prompt] = json.loads(text.splitlines()[-1])
    assert [r["message"] for r in rows] == [alone["Hello"], alone["Why?"], alone["Hi"]]
    hello = encode_chat([{"role": "user", "content": "Hello"}])
    assert rows[0]["prompt_tokens"] == len(load_tokenizer(tiny).encode(hello))


def test_a_plain_prompt_file_from_stdin_raw(capsys, monkeypatch, tiny):
    out, _ = run(capsys, monkeypatch, tiny, "--prompt-file", "-", "--raw", stdin="The\n\nA\n")
    rows = [json.loads(line) for line in out.splitlines()]
    assert len(rows) == 2 and "message" not in rows[0]
    assert rows[0]["prompt_tokens"] == 2  # BOS and "The"


def test_a_spec_runs_with_random_weights(capsys, monkeypatch, tmp_path):
    """`run --spec SPEC --random-weights`, or `run SPEC --random-weights` (as bench takes
    it): the spec's random checkpoint is made once in the cache (official formats) and run;
    a second run reuses it."""
    spec = tmp_path / "mine.yaml"
    spec.write_text("extends: tiny\nname: mine\nnum_layers: 2\nlayers: [sliding, csa]\n")
    monkeypatch.setenv("V4C_CACHE_DIR", str(tmp_path / "cache"))
    rest = ["--random-weights", "--prompt", "Hi", "--threads", "1", "--max-new-tokens", "2",
            "--speculative", "off"]  # fmt: skip
    for made, model in ((True, ["--spec", str(spec)]), (False, [str(spec)])):
        with pytest.raises(SystemExit) as done:
            main(["run", *model, *rest])
        err = capsys.readouterr().err
        assert done.value.code in (0, None), err
        assert ("making a random-weights mine checkpoint" in err) == made
        assert "numerics official (the checkpoint is in the official FP8/FP4 layout)" in err
        assert "2 new (length)" in err
    with pytest.raises(SystemExit) as done:
        main(["run", "--random-weights", "--prompt", "Hi"])
    assert done.value.code == 2
    assert "--random-weights: give the model as a spec (v4c run SPEC --random-weights" in (
        capsys.readouterr().err
    )
    # a vocabulary smaller than the tokenizer's: refused, not an index error in the embedding
    with pytest.raises(SystemExit) as done:
        main(["run", "--spec", "variants/tiny-8k-vocab", "--random-weights", "--prompt", "Hi",
              "--threads", "1"])  # fmt: skip
    err = capsys.readouterr().err
    assert done.value.code == 2 and "Traceback" not in err
    assert "the model's vocab_size is 8192: the tokenizer does not fit this model" in err
