"""YAML -> ModelSpec: `extends` resolution, deep merge, and errors that name the file, the
line, the field path, the value and what was expected, all problems at once."""

from __future__ import annotations

import difflib
import math
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import TypeAdapter, ValidationError

from v4c.errors import SpecError
from v4c.spec.checks import Problem, Unjudged, check
from v4c.spec.schema import ModelSpec

Path_ = tuple[Any, ...]
Marks = dict[Path_, tuple[str, int]]  # field path -> (file, 1-based line)

MAX_EXTENDS_DEPTH = 16


def shipped_spec_dir() -> Path:
    """The folder of the specs shipped as package data (flash.yaml, pro.yaml, tiny.yaml)."""
    return Path(str(resources.files("v4c.specs")))


def resolve_spec_path(name: str | Path, relative_to: Path | None = None) -> Path:
    """A spec file by path; failing that, a shipped spec by name (`flash`, `flash.yaml`)."""
    if not str(name).strip():
        raise SpecError(
            [f"an empty spec name: give a spec file or a shipped name{_suggestion('')}"]
        )
    path = Path(name)
    candidates = [relative_to / path] if relative_to is not None else [path]
    stem = path.name if path.suffix in (".yaml", ".yml") else f"{path.name}.yaml"
    candidates.append(shipped_spec_dir() / path.parent / stem)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    if candidates[0].is_dir():
        raise SpecError([f"{name}: is a folder, not a spec file"])
    raise SpecError([f"{name}: spec file not found{_suggestion(str(name))}"])


def shipped_spec_names() -> list[str]:
    """The names a shipped spec can be given by (`flash`, `variants/flash-2l-slice`)."""
    root = shipped_spec_dir()
    return sorted(str(p.relative_to(root).with_suffix("")) for p in root.rglob("*.yaml"))


def _suggestion(name: str) -> str:
    """The closest shipped name (a misspelling such as `flsh`) and the list of them."""
    names = shipped_spec_names()
    close = difflib.get_close_matches(name.removesuffix(".yaml"), names, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]}?" if close else ""
    return f"{hint} (shipped specs: {', '.join(names)})"


def load_spec(path: str | Path) -> ModelSpec:
    """Read a spec file (following `extends`), validate it whole, or raise SpecError."""
    file = resolve_spec_path(path)
    data, marks = load_spec_data(file)
    return spec_from_data(data, marks, source=str(file))


def load_spec_data(file: Path, _chain: tuple[Path, ...] = ()) -> tuple[dict, Marks]:
    """The merged mapping of `file` and everything it extends, with the line of each value."""
    file = file.resolve()
    if file in _chain:
        cycle = " -> ".join(p.name for p in (*_chain, file))
        raise SpecError([f"{_chain[-1]}: extends: cycle {cycle}"])
    if len(_chain) >= MAX_EXTENDS_DEPTH:
        raise SpecError([f"{file}: extends: chain deeper than {MAX_EXTENDS_DEPTH}"])
    data, marks = _read_yaml(file)
    parent = data.pop("extends", None)
    if parent is None:
        return data, marks
    if not isinstance(parent, str) or not parent:
        line = marks.get(("extends",), (str(file), 0))[1]
        raise SpecError([f"{file}:{line}: extends: expected a spec file path, got {parent!r}"])
    try:
        parent_file = resolve_spec_path(parent, relative_to=file.parent)
    except SpecError:
        line = marks.get(("extends",), (str(file), 0))[1]
        raise SpecError([f"{file}:{line}: extends: file {parent!r} not found"]) from None
    base, base_marks = load_spec_data(parent_file, (*_chain, file))
    marks = {k: v for k, v in marks.items() if k != ("extends",)}
    return deep_merge(base, data), {**base_marks, **marks}


def deep_merge(base: dict, override: dict) -> dict:
    """Mappings merge key by key, recursively; anything else in `override` replaces."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def spec_from_data(data: Any, marks: Marks | None = None, source: str = "<spec>") -> ModelSpec:
    """Validate a mapping as a ModelSpec: field errors first, then the cross-field rules."""
    marks = marks or {}
    if not isinstance(data, dict):
        raise SpecError([f"{source}: expected a mapping of spec fields, got {_show(data)}"])
    try:
        spec = ModelSpec.model_validate(data)
    except ValidationError as err:
        # the cross-field rules whose fields are valid run too: every problem at once
        rules = check(_ValidParts(data, err))
        raise SpecError(_pydantic_problems(err, marks, source) + _located(rules, marks, source))
    except (RecursionError, OverflowError, ValueError, TypeError) as err:
        raise SpecError([f"{source}: {err}"]) from None
    problems = check(spec)
    if problems:
        raise SpecError(_located(problems, marks, source))
    return spec


def _located(problems: list[Problem], marks: Marks, source: str) -> list[str]:
    return [_locate(source, marks, _split(p), p, msg) for p, msg in problems]


class _ValidParts:
    """A ModelSpec stand-in for `check` after validation failed: each top-level field is
    validated alone (a section like `moe` as a whole); reading one that has an error
    raises `Unjudged`, and `check` skips the rules that read it."""

    def __init__(self, data: dict, err: ValidationError):
        self._data = data
        self._bad = {e["loc"][0] for e in err.errors() if e["loc"]}

    def __getattr__(self, name: str) -> Any:
        field = ModelSpec.model_fields.get(name)
        if field is None or name in self._bad:
            raise Unjudged(name)
        if name not in self._data:
            return field.get_default(call_default_factory=True)
        try:
            return TypeAdapter(field.annotation).validate_python(self._data[name])
        except (ValidationError, ValueError, TypeError):
            raise Unjudged(name) from None


def _read_yaml(file: Path) -> tuple[dict, Marks]:
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise SpecError([f"{file}: cannot read: {err}"]) from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{file}:{mark.line + 1}" if mark is not None else str(file)
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise SpecError([f"{where}: YAML syntax error: {problem}"]) from None
    except RecursionError:
        raise SpecError([f"{file}: YAML nested too deeply"]) from None
    if not isinstance(data, dict):
        raise SpecError([f"{file}: expected a mapping of spec fields, got {_show(data)}"])
    marks: Marks = {}
    _collect_marks(node, (), str(file), marks)
    return data, marks


def _collect_marks(node: Any, path: Path_, file: str, out: Marks) -> None:
    """Record the line of every value; a key given twice in one mapping is an error."""
    if path in out:
        return  # an alias seen before
    out[path] = (file, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: set[Any] = set()
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            if key is None or key == "<<":
                continue
            if key in seen:
                dotted = ".".join(map(str, (*path, key)))
                raise SpecError(
                    [f"{file}:{key_node.start_mark.line + 1}: {dotted}: key given twice"]
                )
            seen.add(key)
            _collect_marks(value_node, (*path, key), file, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _collect_marks(item, (*path, i), file, out)


def _pydantic_problems(err: ValidationError, marks: Marks, source: str) -> list[str]:
    lines = []
    for e in err.errors(include_url=False):
        path = _data_path(e["loc"])
        if e["type"] == "extra_forbidden":
            message = "unknown field"
        elif e["type"] == "missing":
            message = "required field is missing"
        else:
            message = f"{e['msg']}, got {_show(e.get('input'))}"
        lines.append(_locate(source, marks, path, format_path(path), message))
    return sorted(set(lines), key=lines.index)


def _data_path(loc: tuple) -> Path_:
    """The path of a pydantic error in the input, without the tag of a pattern item."""
    return tuple(
        part
        for i, part in enumerate(loc)
        if not (part in _TAGS and i > 0 and isinstance(loc[i - 1], int))
    )


_TAGS = {"kind", "repeat"}


def format_path(path: Path_) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<top>"


def _split(dotted: str) -> Path_:
    return tuple(dotted.split("."))


def _locate(source: str, marks: Marks, path: Path_, dotted: str, message: str) -> str:
    for n in range(len(path), -1, -1):
        if path[:n] in marks:
            file, line = marks[path[:n]]
            return f"{file}:{line}: {dotted}: {message}"
    return f"{source}: {dotted}: {message}"


def _show(value: Any) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
