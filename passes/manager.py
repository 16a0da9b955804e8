"""The pass manager: runs a pipeline of named passes with the verifier after each, writes
the graph after every pass (`000_build.ir`, `001_<pass>.ir`, ...) and `manifest.json`,
honours disabled passes, and names the pass that failed and those that ran before it.
After each pass it also checks that no official rounding was dropped (`passes.roundings`),
so any pipeline a user picks keeps the numerics `simulate_numerics` placed.

Dumps hold no timings or paths, so compiling twice writes identical files; timings are
returned in the records for the console.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from v4c.errors import IRError, V4CError
from v4c.ir.graph import Graph
from v4c.ir.printer import print_graph
from v4c.ir.verify import verify
from v4c.passes import load_passes, roundings
from v4c.passes.base import PASSES, REQUIRES, PassContext
from v4c.passes.pipeline import DEFAULT_PIPELINE


@dataclass
class PassRecord:
    name: str
    changed: bool
    stats: dict = field(default_factory=dict)
    nodes: int = 0
    skipped: bool = False
    ms: float = 0.0  # console only: not written to the dump


def check_pipeline(names: list[str], disabled: set[str] = frozenset()) -> list[str]:
    """The passes that will run; unknown names and unmet requirements are errors."""
    load_passes()
    unknown = [n for n in [*names, *disabled] if n not in PASSES]
    if unknown:
        raise IRError(f"unknown pass {unknown[0]!r}; passes: {', '.join(sorted(PASSES))}")
    active = [n for n in names if n not in disabled]
    for i, name in enumerate(active):
        missing = [r for r in REQUIRES[name] if r not in active[:i]]
        if missing:
            raise IRError(f"pass {name!r} needs {missing} to run before it")
    return active


def run_pipeline(
    graph: Graph,
    ctx: PassContext,
    names: list[str] | None = None,
    *,
    disabled: set[str] = frozenset(),
    dump_dir: Path | None = None,
) -> list[PassRecord]:
    names = list(DEFAULT_PIPELINE if names is None else names)
    active = check_pipeline(names, disabled)
    if ctx.options.numerics == "official" and "simulate_numerics" not in active:
        raise IRError("numerics official needs the simulate_numerics pass in the pipeline")
    verify(graph, ctx.spec)
    dump = _Dump(dump_dir)
    dump.write(0, "build", graph)
    records: list[PassRecord] = []
    for number, name in enumerate(names, start=1):
        if name not in active:
            records.append(PassRecord(name, False, nodes=len(graph), skipped=True))
            continue
        start = time.perf_counter()
        before = roundings.snapshot(graph)
        try:
            result = PASSES[name](graph, ctx)
            verify(graph, ctx.spec)
            roundings.check(before, graph, name)
        except V4CError as err:
            ran = [r.name for r in records if not r.skipped]
            raise IRError(f"pass {name} failed after {ran}: {err}") from None
        ms = (time.perf_counter() - start) * 1e3
        records.append(PassRecord(name, result.changed, dict(result.stats), len(graph), ms=ms))
        dump.write(number, name, graph)
    dump.manifest(records)
    return records


class _Dump:
    def __init__(self, folder: Path | None) -> None:
        self.folder = folder
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)

    def write(self, number: int, name: str, graph: Graph) -> None:
        if self.folder is not None:
            (self.folder / f"{number:03d}_{name}.ir").write_text(print_graph(graph))

    def manifest(self, records: list[PassRecord]) -> None:
        if self.folder is None:
            return
        rows = [
            {
                "pass": r.name,
                "changed": r.changed,
                "skipped": r.skipped,
                "nodes": r.nodes,
                "stats": r.stats,
            }
            for r in records
        ]
        (self.folder / "manifest.json").write_text(
            json.dumps(rows, indent=1, sort_keys=True) + "\n"
        )
