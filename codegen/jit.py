"""From a launch to a loaded kernel module: params -> render -> cache -> import."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from types import ModuleType
from typing import Any

from v4c.codegen.cache import CachedKernel, store
from v4c.codegen.params import Shapes, load_templates
from v4c.codegen.render import Params, render
from v4c.errors import V4CError


class CodegenError(V4CError):
    """An op has no template, or a template cannot be rendered for its constants."""


def params_for(kind: str, attrs: dict[str, Any], inputs: Shapes) -> Params:
    templates = load_templates()
    if kind not in templates:
        raise CodegenError(
            f"no Triton template for op {kind!r}; templates: {', '.join(sorted(templates))}"
        )
    return templates[kind].from_launch(attrs, inputs)


def build(kind: str, params: Params, root: Path) -> CachedKernel:
    return store(root, kind, render(kind, params))


@lru_cache(maxsize=None)
def load(kind: str, params: Params, root: Path) -> ModuleType:
    return build(kind, params, root).load()
