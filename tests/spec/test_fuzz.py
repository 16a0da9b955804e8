"""Random input to the spec readers: a ModelSpec or a SpecError, never anything else."""

from __future__ import annotations

import json

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import DATA, SPECS
from v4c.errors import SpecError
from v4c.spec import load_spec, spec_from_data
from v4c.spec.config_io import spec_from_config

TINY = yaml.safe_load((SPECS / "tiny.yaml").read_text())
FLASH_CONFIG = json.loads((DATA / "flash_config.json").read_text())

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["sliding", "csa", "hca", "fp4", "fp8", "bf16", "yarn", "flash.yaml"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def paths(data, prefix=()):
    """Every key path of a nested mapping/list, leaves and inner nodes."""
    yield prefix
    if isinstance(data, dict):
        for key, value in data.items():
            yield from paths(value, (*prefix, key))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            yield from paths(value, (*prefix, i))


def mutate(data, path, value):
    if not path:
        return value
    if not isinstance(data, (list, dict)):
        raise KeyError(path)  # an earlier mutation replaced the container
    out = list(data) if isinstance(data, list) else dict(data)
    head, rest = path[0], path[1:]
    out[head] = mutate(out[head], rest, value)
    return out


def accepts_or_spec_error(call):
    try:
        call()
    except SpecError as err:
        assert err.problems and all(isinstance(p, str) and p for p in err.problems)


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.data())
def test_mutated_spec(data):
    chosen = data.draw(st.lists(st.sampled_from(list(paths(TINY))), min_size=1, max_size=3))
    spec = TINY
    for path in chosen:
        try:
            spec = mutate(spec, path, data.draw(values))
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation removed this path
    accepts_or_spec_error(lambda: spec_from_data(spec))


@FUZZ
@given(st.data())
def test_mutated_official_config(data):
    path = data.draw(st.sampled_from(list(paths(FLASH_CONFIG))))
    config = mutate(FLASH_CONFIG, path, data.draw(values))
    accepts_or_spec_error(lambda: spec_from_config(config, "x"))


@FUZZ
@given(text=st.text(max_size=200))
def test_random_yaml_text(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("fuzz") / "spec.yaml"
    path.write_text(text, encoding="utf-8")
    accepts_or_spec_error(lambda: load_spec(path))


@FUZZ
@given(
    extra=st.dictionaries(
        st.sampled_from(["extends", "name", "layers", "moe", "<<"]), values, max_size=3
    )
)
def test_random_yaml_over_a_shipped_spec(tmp_path_factory, extra):
    path = tmp_path_factory.mktemp("fuzz") / "spec.yaml"
    path.write_text(yaml.safe_dump({"extends": "tiny.yaml", **extra}), encoding="utf-8")
    accepts_or_spec_error(lambda: load_spec(path))
