"""The template registry: which template computes which op kind, and its parameters.

Each family module (`params_<family>.py`) defines one `Params` subclass per template and
registers it with `@template(kind)`; the template file is `templates/<kind>.py.j2`.
`from_launch(attrs, inputs)` takes the op's attributes and the (shape, dtype) of each
operand of one launch and returns the constants the template is rendered with. Runtime
sizes (rows, tokens) are not parameters: one kernel serves every batch and step length.
"""

from __future__ import annotations

import importlib
from typing import Callable

from v4c.codegen.render import Params

Shapes = list[tuple[tuple[int, ...], str]]  # (shape, dtype) of each operand

TEMPLATES: dict[str, type[Params]] = {}
FAMILIES = ("v4c.codegen.params_norm",)


def template(kind: str) -> Callable[[type[Params]], type[Params]]:
    def deco(cls: type[Params]) -> type[Params]:
        TEMPLATES[kind] = cls
        return cls

    return deco


def load_templates() -> dict[str, type[Params]]:
    for module in FAMILIES:
        importlib.import_module(module)
    return TEMPLATES


