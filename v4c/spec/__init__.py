"""v4c.spec: the V4 spec language (pydantic), YAML loading with `extends`, layer patterns,
parameter counts, and conversion to and from the official and HF `config.json` layouts."""

from v4c.spec.layers import LayerInfo, expand, layer_table
from v4c.spec.load import load_spec, resolve_spec_path, spec_from_data
from v4c.spec.schema import AttentionKind, ModelSpec

__all__ = [
    "AttentionKind",
    "LayerInfo",
    "ModelSpec",
    "expand",
    "layer_table",
    "load_spec",
    "resolve_spec_path",
    "spec_from_data",
]
