"""`compile_spec`: spec -> graph -> passes -> plan, and the output folder of `v4c compile`.

    DIR/plan.json        the Plan (launches, buffers, params, states)
    DIR/ir/NNN_<pass>.ir the graph after each pass, and ir/manifest.json
    DIR/kernels/*.py     every Triton kernel the plan launches, rendered
    DIR/report.md        bytes per token, cache sizes, op and kernel counts, memory peak, and
                         what one rank holds (weights, caches, activations) against a device
Compiling the same spec with the same options twice writes byte-identical files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from v4c.budget import ExpertFit, fit
from v4c.budget_report import budget_section
from v4c.errors import V4CError
from v4c.expert_profile import ExpertProfile
from v4c.ir.build import build
from v4c.ir.graph import Graph
from v4c.ir.plan import Plan
from v4c.passes.base import CompileOptions, PassContext
from v4c.passes.manager import PassRecord, check_pipeline, run_pipeline
from v4c.passes.pipeline import DEFAULT_PIPELINE
from v4c.report import render
from v4c.spec import ModelSpec
from v4c.spec.parallel import DEVICE_GB


class OutputError(V4CError):
    """The output folder cannot be written."""


@dataclass
class Compiled:
    spec: ModelSpec
    built: Graph
    graph: Graph
    plan: Plan
    records: list[PassRecord]
    pipeline: list[str]
    budget: ExpertFit | None = None  # the device budget's fit (write_output)


def compile_spec(
    spec: ModelSpec,
    options: CompileOptions = CompileOptions(),
    pipeline: list[str] | None = None,
    disabled: set[str] = frozenset(),
    dump_dir: Path | None = None,
) -> Compiled:
    names = list(pipeline or spec.pipeline or DEFAULT_PIPELINE)
    check_pipeline(names, disabled)
    built = build(spec)
    graph = built.copy()
    records = run_pipeline(
        graph, PassContext(spec, options), names, disabled=disabled, dump_dir=dump_dir
    )
    if "plan" not in graph.meta:
        raise V4CError("the pipeline made no plan: it must end with the lower pass")
    return Compiled(spec, built, graph, graph.meta["plan"], records, names)


def write_output(
    spec: ModelSpec,
    out: Path,
    dump_ir: Path | None = None,
    device_gb: float = DEVICE_GB,
    profile: ExpertProfile | None = None,
    **kwargs,
) -> Compiled:
    """Compile into `out` (made if missing); the IR dumps go to `dump_ir` (default out/ir),
    whose earlier *.ir files and manifest are replaced. `device_gb`: the device size the
    report checks one rank's memory against, in GiB: the routed experts that do not fit live
    in host memory (`v4c.budget`), chosen by `profile`."""
    ir_dir = dump_ir or out / "ir"
    for folder in (out, ir_dir):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            for old in (
                [*folder.glob("*.ir"), *folder.glob("manifest.json")] if folder == ir_dir else []
            ):
                old.unlink()
            probe = folder / ".v4c-write-test"
            probe.write_text("")
            probe.unlink()
        except OSError as err:
            raise OutputError(
                f"{folder}: cannot write the output folder: {err.strerror or err}"
            ) from None
    compiled = compile_spec(spec, dump_dir=ir_dir, **kwargs)
    budget = fit(compiled.plan, device_gb, spec.moe.top_k, profile)
    compiled.plan.offload = budget.to_plan()
    compiled.budget = budget
    (out / "plan.json").write_text(compiled.plan.to_json())
    kernels, where = _write_kernels(out / "kernels", compiled.plan)
    active = [r.name for r in compiled.records if not r.skipped]
    report = render(spec, compiled.built, compiled.graph, compiled.plan, active, where, device_gb)
    report += "\n".join(budget_section(budget, compiled.plan))
    (out / "report.md").write_text(report)
    return compiled


def _write_kernels(folder: Path, plan: Plan) -> tuple[dict[str, str], dict]:
    from v4c.codegen.emit import plan_kernels

    files, where = plan_kernels(plan)
    folder.mkdir(exist_ok=True)
    for old in folder.glob("*.py"):
        old.unlink()
    for name, source in sorted(files.items()):
        (folder / name).write_text(source)
    return files, where
