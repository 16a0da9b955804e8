"""The bound program: the plan is the artifact, a step is a flat loop over calls bound once,
and a decode step is one a CUDA graph can hold (no sync, nothing kept outside the arena)."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import pytest
import torch

from tests.helpers.dispatch import DispatchCounter
from tests.small_vocab import small_vocab
from v4c.ir.weights import WeightFormat
from v4c.compile import compile_spec, write_output
from v4c.ir.types import resolve_dim
from v4c.passes.base import CompileOptions
from v4c.ir.types import torch_dtype
from v4c.runtime.engine import Engine, EngineError
from v4c.runtime.program import BindError
from v4c.runtime.checkpoint.random_weights import as_stored, random_weights
from v4c.spec import load_spec

PROMPT = list(range(100, 120))  # 20 tokens: past the 16-token window and 5 CSA blocks


@pytest.fixture(scope="module")
def tiny():
    spec = load_spec("tiny")
    return spec, random_weights(spec, seed=0)


def fp32_engine(spec, weights, **options) -> Engine:
    options = {"max_tokens": 32, "max_seq": 160, "weights": "bf16", "dtype": "fp32", **options}
    return Engine(compile_spec(spec, CompileOptions(**options)).plan, weights, dtype=torch.float32)


def decode_step(engine: Engine, position: int):
    """The bound decode step of one sequence, its inputs set for `position`."""
    step = engine.programs["decode"].bind(1, 1)
    step.inputs["ids"].fill_(7)
    step.inputs["positions"].fill_(position)
    if "slots" in step.inputs:
        step.inputs["slots"].fill_(0)
    return step


@pytest.mark.parametrize("position", [20, 127, 128])  # a plain token, a ratio-128 boundary
def test_decode_step_never_syncs_and_keeps_nothing_outside_the_arena(tiny, position):
    engine = fp32_engine(*tiny)
    engine.reset(1)
    engine.forward([PROMPT])
    step = decode_step(engine, position)
    step.run()  # first use: the RoPE tables and the like are made once, on the device
    with DispatchCounter() as counter:
        step.run()
    assert counter.sync_count == 0, counter.syncs
    assert counter.retained == [], "storages outlived the step"


def test_a_step_is_bound_once_and_reuses_its_buffers(tiny):
    engine = fp32_engine(*tiny)
    engine.reset(1)
    engine.forward([PROMPT])
    program = engine.programs["decode"]
    step = program.bind(1, 1)
    assert program.bind(1, 1) is step
    logits = step.outputs["logits"]
    arena = program.arena.untyped_storage().data_ptr()
    assert logits.untyped_storage().data_ptr() == arena  # results live in the arena
    assert step.launches == sum(launch.kind != "view" for launch in program.entry.launches)
    engine.forward([[5]])
    assert step.outputs["logits"] is logits  # the step wrote into the same views


@pytest.mark.slow
def test_triton_kernels_write_into_the_arena_views(tmp_path):
    """The triton backend's bound decode step: each kernel writes its results into the
    arena views it is bound to (`out=`), so no call allocates a tensor of one of its
    results' shapes and dtypes (the Triton interpreter's own host copies are of other
    shapes). The tiny model with a small vocabulary: the same launches, a 1024-row lm_head
    the interpreter runs in seconds."""
    spec = small_vocab()
    weights = random_weights(spec, seed=0)
    plan = compile_spec(spec, CompileOptions(max_seq=160, weights="bf16", dtype="fp32")).plan
    plan = replace(plan, entries={"decode": plan.entries["decode"]})  # no prefill kernels
    engine = Engine(
        plan, weights, dtype=torch.float32, backend="triton", kernel_root=tmp_path / "cache"
    )
    engine.reset(1)
    step = decode_step(engine, 20)
    program = engine.programs["decode"]
    env = {**program.entry.env, "B": 1, "T": 1}
    launches = [launch for launch in program.entry.launches if launch.kind != "view"]
    for launch, call in zip(launches, step.calls, strict=True):
        if launch.kind != "kernel":
            continue
        results = {
            (tuple(resolve_dim(d, env) for d in ref.dims), torch_dtype(ref.dtype, torch.float32))
            for ref in launch.outputs
            if ref.kind != "state"
        }
        with DispatchCounter() as counter:
            call()
        made = [(op, shape, dtype) for op, shape, dtype in counter.new_tensors]
        assert not [m for m in made if m[1:] in results], (launch.node, results, made)
        assert counter.sync_count == 0, (launch.node, counter.syncs)


def test_a_result_bound_to_a_strided_view_is_refused(tiny):
    """Kernels write results as dense rows: a plan whose launch would write into a view
    with gaps (here the take_last of a two-row step) fails at binding, naming the launch."""
    spec, weights = tiny
    options = CompileOptions(max_batch=2, max_tokens=8, max_seq=64, weights="bf16")
    plan = compile_spec(spec, options).plan
    entry = plan.entries["prefill"]
    at = next(i for i, launch in enumerate(entry.launches) if launch.op == "take_last")
    writer = entry.launches[at + 1]
    entry.launches[at + 1] = replace(writer, outputs=entry.launches[at].outputs)
    engine = Engine(plan, weights, dtype=torch.bfloat16)
    with pytest.raises(BindError, match=rf"{writer.node}: result .* not contiguous"):
        engine.programs["prefill"].bind(2, 4)


def test_dense_gemms_run_in_the_operands_dtype(tiny):
    """A bf16 plan's GEMMs are one mm into the output view: no fp32 copy of a weight."""
    spec, weights = tiny
    plan = compile_spec(spec, CompileOptions(max_seq=64, weights="bf16")).plan
    engine = Engine(plan, weights, dtype=torch.bfloat16)
    engine.reset(1)
    step = engine.programs["decode"].bind(1, 1)
    launches = [l for l in engine.programs["decode"].entry.launches if l.kind != "view"]
    gemms = ("linear", "merged_linear")  # a merged launch: each part's mm into its view
    assert {launch.op for launch in launches} >= set(gemms)
    for launch, call in zip(launches, step.calls, strict=True):
        if launch.op not in gemms:
            continue
        with DispatchCounter() as counter:
            call()
        mm = {op for op in counter.ops if "mm" in op}
        assert mm == {"aten.mm.out"}, (launch.node, counter.ops)
        assert counter.allocation_count == 0, (launch.node, counter.allocations)


def test_plan_json_runs_in_a_fresh_process(tmp_path):
    """plan.json alone: a new interpreter loads it and binds every launch's op, with no
    import side effect to remember."""
    write_output(load_spec("tiny"), tmp_path, options=CompileOptions(max_seq=64))
    code = (
        "import sys; from pathlib import Path; from v4c.ir.plan import Plan; "
        "from v4c.runtime.program import plan_op; "
        "plan = Plan.from_json(Path(sys.argv[1]).read_text()); "
        "print(sum(1 for e in plan.entries.values() for l in e.launches if plan_op(l)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "plan.json")],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert int(out.stdout) == sum(len(e["launches"]) for e in plan["entries"].values())


def test_kernels_written_are_the_kernels_loaded(tmp_path, tiny):
    """`v4c compile`'s kernels/ folder holds byte for byte the sources a run of the plan
    loads, FP8/FP4 expert weights included (the plan's formats decide both)."""
    spec, weights = tiny
    options = CompileOptions(max_tokens=16, max_seq=64, dtype="fp32")
    compiled = write_output(spec, tmp_path / "out", options=options)
    params = compiled.plan.params
    assert params["layers.0.ffn.experts.{e}.w1.weight"].format == WeightFormat.fp4(32)
    stored = as_stored({n: weights[n] for n in params}, params)
    engine = Engine(
        compiled.plan, stored, dtype=torch.float32, backend="triton",
        kernel_root=tmp_path / "cache",
    )  # fmt: skip
    loaded = {
        open(module.__file__).read()
        for program in engine.programs.values()
        for module in program.kernels.values()
    }
    written = {p.read_text() for p in (tmp_path / "out" / "kernels").glob("*.py")}
    assert loaded == written


def test_a_checkpoint_in_other_formats_than_the_plan_is_refused(tiny):
    spec, weights = tiny
    plan = compile_spec(spec, CompileOptions(max_seq=64, dtype="fp32")).plan  # as stored
    with pytest.raises(
        EngineError,
        match=r"layers\.0\.attn\.wkv\.weight: the plan reads it as fp8 e4m3 \(e8m0 per 128x128\)",
    ):
        Engine(plan, weights, dtype=torch.float32)


@pytest.mark.gpu
def test_cuda_graph_replay_equals_eager_and_never_syncs(tiny):
    spec, weights = tiny
    plan = compile_spec(spec, CompileOptions(max_tokens=32, max_seq=160, weights="bf16")).plan
    eager = Engine(plan, weights, device="cuda", dtype=torch.bfloat16, cuda_graphs=False)
    graphed = Engine(plan, weights, device="cuda", dtype=torch.bfloat16, backend="triton")
    eager_tri = Engine(
        plan, weights, device="cuda", dtype=torch.bfloat16, backend="triton", cuda_graphs=False
    )
    for engine in (eager, graphed, eager_tri):
        engine.reset(1)
        engine.forward([PROMPT])
    token = [[5]]
    for _ in range(20):
        a, b = graphed.forward(token), eager_tri.forward(token)
        assert torch.equal(a, b)  # replay is the eager step, exactly
        token = [[int(a.argmax())]]
    step = graphed.programs["decode"].bind(1, 1)
    before = torch.cuda.memory_allocated()
    torch.cuda.set_sync_debug_mode("error")
    try:
        graphed.graphs[1].replay()
        step.run()  # the eager step too: no host-device sync
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()
    assert torch.cuda.memory_allocated() == before


def test_rope_tables_are_made_once_per_device(tiny):
    """A step never rebuilds or copies a table: the RoPE frequencies of a layer are one
    tensor per device, shared by the reference ops and the kernels."""
    from v4c.codegen.runtime import rope_table
    from v4c.ir.ops.rope import Rope

    op = Rope(rope_dim=64, theta=10000.0, yarn=(16.0, 65536, 32.0, 1.0))
    table = op.freqs("cpu")
    assert op.freqs(torch.device("cpu")) is table
    assert rope_table(64, 10000.0, [16.0, 65536, 32.0, 1.0], "cpu") is table
