"""From a launch to a loaded kernel module: params -> render -> cache -> import."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from types import ModuleType
from typing import Any

from v4c.codegen.cache import CachedKernel, store
from v4c.codegen.params import Operand, Shapes, Template, load_templates
from v4c.codegen.render import render
from v4c.errors import V4CError
from v4c.ir.op import make_op


class CodegenError(V4CError):
    """An op has no template, or a template cannot be rendered for its constants."""


def params_for(kind: str, attrs: dict[str, Any], inputs: Shapes) -> Template:
    """The template parameters of one launch of `kind`: its operands (in order) are handed
    to the template by the op's role names."""
    templates = load_templates()
    if kind not in templates:
        raise CodegenError(
            f"no Triton template for op {kind!r}; templates: {', '.join(sorted(templates))}"
        )
    roles = make_op(kind, attrs).operand_roles()
    if len(roles) != len(inputs):
        raise CodegenError(f"{kind}: {len(inputs)} operands for the roles {roles}")
    ops = {role: Operand(tuple(op[0]), *op[1:]) for role, op in zip(roles, inputs)}
    return templates[kind].from_launch(attrs, ops)


def build(params: Template, root: Path) -> CachedKernel:
    return store(root, type(params).TEMPLATE, render(params))


@lru_cache(maxsize=None)
def load(params: Template, root: Path) -> ModuleType:
    return build(params, root).load()
