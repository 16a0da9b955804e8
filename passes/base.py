"""What every pass shares: the context it runs in, what it reports, and the registry."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from v4c.errors import IRError
from v4c.ir.graph import Graph
from v4c.passes.options import CompileOptions
from v4c.spec import ModelSpec


@dataclass
class PassContext:
    spec: ModelSpec
    options: CompileOptions = field(default_factory=CompileOptions)


@dataclass(frozen=True)
class PassResult:
    changed: bool
    stats: dict[str, int] = field(default_factory=dict)


Pass = Callable[[Graph, PassContext], PassResult]
PASSES: dict[str, Pass] = {}
REQUIRES: dict[str, tuple[str, ...]] = {}  # pass -> passes that must run before it


def register_pass(name: str, requires: tuple[str, ...] = ()) -> Callable[[Pass], Pass]:
    def deco(fn: Pass) -> Pass:
        if name in PASSES:
            raise IRError(f"pass {name!r} registered twice")
        PASSES[name] = fn
        REQUIRES[name] = requires
        return fn

    return deco
