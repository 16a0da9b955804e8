"""Bad specs: each is a SpecError naming the file, the line, the field path, the value and
what was expected; every problem is reported at once."""

from __future__ import annotations

import pytest

from tests.conftest import SPECS
from v4c.errors import SpecError
from v4c.spec import load_spec


def errors_of(tmp_path, text: str, name: str = "bad.yaml") -> list[str]:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    return info.value.problems


def only(problems: list[str]) -> str:
    assert len(problems) == 1, problems
    return problems[0]


def test_unknown_field(tmp_path):
    line = only(errors_of(tmp_path, "extends: tiny.yaml\nname: x\nmoe:\n  colour: red\n"))
    assert line == f"{tmp_path}/bad.yaml:4: moe.colour: unknown field"


def test_wrong_type(tmp_path):
    line = only(errors_of(tmp_path, "extends: tiny.yaml\nname: x\nhidden_size: wide\n"))
    assert line.startswith(f"{tmp_path}/bad.yaml:3: hidden_size: Input should be a valid integer")
    assert line.endswith("got 'wide'")


@pytest.mark.parametrize(
    "override, expected",
    [
        (
            "attention: {o_groups: 3}",
            "attention.o_groups: must divide num_heads (4) into whole head groups, got 3",
        ),
        ("num_layers: 5", "layers: expands to 4 layers, must equal num_layers (5)"),
        ("moe: {hash_layers: 9}", "moe.hash_layers: must be <= num_layers (4), got 9"),
        ("moe: {top_k: 12}", "moe.top_k: must be <= moe.num_experts (8), got 12"),
        (
            "attention: {rope_head_dim: 256}",
            "attention.rope_head_dim: must be <= head_dim (128), got 256",
        ),
        (
            "attention: {sliding_window: 0}",
            "attention.sliding_window: Input should be greater than 0, got 0",
        ),
        (
            "attention: {indexer: {head_dim: 96}}",
            "attention.indexer.head_dim: must be a power of two (Hadamard), got 96",
        ),
        (
            "moe: {intermediate_size: 48}",
            "moe.intermediate_size: must be a multiple of 32 for FP4 experts, got 48",
        ),
        (
            "layers: [sliding, dense, csa, csa]",
            "layers[1]: Input should be 'sliding', 'csa' or 'hca', got 'dense'",
        ),
        (
            "layers: [{repeat: 0, of: [csa]}]",
            "layers[0].repeat: Input should be greater than 0, got 0",
        ),
    ],
)
def test_inconsistent_values(tmp_path, override, expected):
    problems = errors_of(tmp_path, f"extends: tiny.yaml\nname: x\n{override}\n")
    assert any(p.endswith(expected) for p in problems), problems
    line = next(p for p in problems if p.endswith(expected))
    # the line of the field named: here, except `layers`, which only tiny.yaml sets
    where = f"{SPECS}/tiny.yaml:" if expected.startswith("layers:") else f"{tmp_path}/bad.yaml:3: "
    assert line.startswith(where), line


def test_all_problems_at_once(tmp_path):
    problems = errors_of(
        tmp_path,
        "extends: tiny.yaml\nname: x\nmoe: {top_k: 12, hash_layers: 9}\nattention: {o_groups: 3}\n",
    )
    assert len(problems) == 3


def test_missing_fields_named(tmp_path):
    problems = errors_of(tmp_path, "name: x\n")
    assert f"{tmp_path}/bad.yaml:1: hidden_size: required field is missing" in problems
    assert any(p.endswith("attention: required field is missing") for p in problems)


def test_yaml_syntax_error_names_the_line(tmp_path):
    line = only(errors_of(tmp_path, "name: x\nmoe: top_k: 3\n"))
    assert line == f"{tmp_path}/bad.yaml:2: YAML syntax error: mapping values are not allowed here"


def test_duplicate_key(tmp_path):
    line = only(errors_of(tmp_path, "name: x\nname: y\n"))
    assert line == f"{tmp_path}/bad.yaml:2: name: key given twice"


def test_top_level_not_a_mapping(tmp_path):
    assert "expected a mapping" in only(errors_of(tmp_path, "- 1\n- 2\n"))


def test_missing_extends(tmp_path):
    line = only(errors_of(tmp_path, "extends: nowhere.yaml\nname: x\n"))
    assert line == f"{tmp_path}/bad.yaml:1: extends: file 'nowhere.yaml' not found"


def test_cyclic_extends(tmp_path):
    (tmp_path / "a.yaml").write_text("extends: bad.yaml\nname: a\n")
    line = only(errors_of(tmp_path, "extends: a.yaml\nname: b\n"))
    assert "extends: cycle bad.yaml -> a.yaml -> bad.yaml" in line


def test_error_in_a_parent_names_the_parent_line(tmp_path):
    (tmp_path / "base.yaml").write_text("extends: tiny.yaml\nname: base\nmoe:\n  top_k: 0\n")
    line = only(errors_of(tmp_path, "extends: base.yaml\nname: child\n"))
    assert line.startswith(f"{tmp_path}/base.yaml:4: moe.top_k: Input should be greater than 0")


def test_missing_file():
    with pytest.raises(SpecError, match="nowhere.yaml: spec file not found"):
        load_spec("nowhere.yaml")
