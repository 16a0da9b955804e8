"""The interpreter's upcast switch (kernels/dots.py): the GPU render of every template that
calls `tl.dot` differs from the interpreter's only in its `UPCAST` constant (and the params
header), so both run the same kernel body, and it is valid Python. The interpreter's
numerics are the other kernel tests'; the GPU's bf16 dots are checked by `pytest -m gpu`."""

from __future__ import annotations

import ast
import difflib
from pathlib import Path

import pytest

from tests.codegen.sm90_build import mma_of
from v4c.ir.weights import WeightFormat
from v4c.codegen import jit
from v4c.codegen.params import Dots, load_templates
from v4c.codegen.render import render

KERNELS = Path(jit.__file__).parent / "kernels"

SPARSE = {"window": 8, "softmax_scale": 0.125}
# q, kv, positions, slots, sink, window_cache, compressed, topk_idx
BF16_ATTN = [((1, 2, 16, 64), "bf16"), ((1, 2, 64), "bf16"), ((1, 2), "i64"), ((1,), "i64"),
             ((16,), "fp32"), ((1, 8, 64), "bf16"), ((1, 4, 64), "bf16"),
             ((1, 2, 4), "i64")]  # fmt: skip
INDEXER = {"rope_dim": 16, "topk": 4, "ratio": 4, "theta": 10000.0, "yarn": None}
# q, weights (the projections: 4 heads of 64), positions, slots, keys
IDX_IN = [((1, 2, 256), "bf16"), ((1, 2, 4), "bf16"), ((1, 2), "i64"), ((1,), "i64"),
          ((1, 8, 64), "bf16")]  # fmt: skip
SWIGLU = {"limit": 7.0}
FP8 = WeightFormat.fp8((128, 128))
DENSE = [((1, 2, 256), "bf16")] + [((512, 256), "bf16", FP8), ((256, 512), "bf16", FP8)] * 2
EXPERTS = [((1, 2, 256), "bf16"), ((1, 2, 2), "i64"), ((5,), "i64"), ((1, 2, 2), "fp32")]
FP4 = [
    ((4, 512, 256), "bf16", WeightFormat.fp4(32)),
    ((4, 256, 512), "bf16", WeightFormat.fp4(32)),
    ((4, 512, 256), "bf16", WeightFormat.fp4(32)),
]

LAUNCHES = {
    "window": ("sparse_attention", {**SPARSE, "ratio": 0}, BF16_ATTN[:6]),
    "csa": ("sparse_attention", {**SPARSE, "ratio": 4}, BF16_ATTN),
    "hca": ("sparse_attention", {**SPARSE, "ratio": 128}, BF16_ATTN[:7]),
    # the q norm + RoPE and the inverse RoPE folded in (passes/fuse_attn_q, fuse_attn_o)
    "csa_rope": (
        "sparse_attention_rope",
        {
            **SPARSE,
            "ratio": 4,
            "rope_dim": 16,
            "theta": 10000.0,
            "yarn": None,
            "q_norm": True,
            "o_rope": True,
        },
        BF16_ATTN,
    ),  # fmt: skip
    "wo_a": ("grouped_linear", {"groups": 2}, [((1, 2, 16, 64), "bf16"), ((64, 512), "bf16")]),
    "wq_a_fp8": ("linear", {"out_dtype": "bf16", "act_quant": True}, DENSE[:2]),
    # wq_a (FP8, W8A8) and a compressor's bf16 projection (fp32 out) in one launch
    "merged": (
        "merged_linear",
        {"out_dtypes": ("bf16", "fp32"), "act_quant": (True, False)},
        DENSE[:2] + [((64, 256), "bf16")],
    ),  # fmt: skip
    "indexer": ("indexer_topk", INDEXER, IDX_IN),
    "shared_fp8": ("swiglu", SWIGLU, DENSE[:3] + DENSE[1:2]),
    "experts_fp4": ("grouped_swiglu", SWIGLU, EXPERTS + FP4),
    "experts_fp32": ("grouped_swiglu", SWIGLU, [((1, 2, 256), "fp32")] + EXPERTS[1:] + FP4),
}


def renders(name: str) -> tuple[str, str]:
    """(interpreter render, GPU render) of one launch."""
    kind, attrs, shapes = LAUNCHES[name]
    params = jit.params_for(kind, attrs, shapes)
    assert params.upcast  # the tests run under TRITON_INTERPRET=1
    gpu = type(params)(**{**params.model_dump(), "upcast": False})
    return render(params), render(gpu)


@pytest.mark.parametrize("name", sorted(LAUNCHES))
def test_gpu_render_differs_only_in_the_switch(name):
    interp, gpu = renders(name)
    changed = [
        line
        for line in difflib.unified_diff(interp.splitlines(), gpu.splitlines(), lineterm="", n=0)
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]
    header = [c[0] for c in changed if c[1:].startswith("# params:")]
    body = [c.split("#")[0].strip() for c in changed if not c[1:].startswith("# params:")]
    assert header == ["-", "+"] and body == ["-UPCAST = True", "+UPCAST = False"], changed
    compile(gpu, f"{name}.py", "exec")  # valid Python


def test_every_template_with_a_dot_has_the_switch():
    """A template whose kernels reach `tl.dot` takes `upcast` from `Dots`, and only those."""
    # gate_route's GEMM is a `linear`'s: its `gemm` field carries the switch
    dotted = {
        "sparse_attention", "sparse_attention_rope", "grouped_linear", "linear", "merged_linear",
        "indexer_topk", "swiglu", "grouped_swiglu",
    }  # fmt: skip
    assert {k for k, cls in load_templates().items() if issubclass(cls, Dots)} == dotted
    assert {LAUNCHES[n][0] for n in LAUNCHES} == dotted


def test_no_dot_operand_is_cast_in_place():
    """Every `tl.dot` in the helpers takes names or `dot_operand(...)`, never an inline
    `.to(...)`: the upcast lives in the one switch."""
    for path in sorted(KERNELS.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "tl.dot":
                for arg in node.args[:2]:
                    assert ".to(" not in ast.unparse(arg), f"{path.name}: {ast.unparse(node)}"


# flash-decoding's `attend`, the indexer's `score`
ATTN_PTRS = {"q_ptr": "*bf16", "kv_ptr": "*bf16", "pos_ptr": "*i64", "slots_ptr": "*i64",
             "ring_ptr": "*bf16", "comp_ptr": "*bf16", "idx_ptr": "*i64", "part_ptr": "*fp32",
             "ml_ptr": "*fp32", "scale": "fp32"}  # fmt: skip
IDX_PTRS = {"q_ptr": "*bf16", "w_ptr": "*bf16", "pos_ptr": "*i64", "slots_ptr": "*i64",
            "keys_ptr": "*bf16", "freqs_ptr": "*fp32", "scores_ptr": "*fp32", "hist_ptr": "*i32",
            "scale": "fp32"}  # fmt: skip
FP8_GATE_UP = {"x_ptr": "*bf16", "w1_ptr": "*fp8e4nv", "w3_ptr": "*fp8e4nv", "s1_ptr": "*u8",
               "s3_ptr": "*u8", "h_ptr": "*fp32", "part_ptr": "*fp32",
               "count_ptr": "*i32"}  # fmt: skip
SPREAD = {"BM": 16, "BN": 64, "BK": 128, "SPLIT": 2, "RANGE": 128, "SPREAD": True}
FP32_DOWN = {"h_ptr": "*fp32", "offsets_ptr": "*i64", "w2_ptr": "*u8", "s2_ptr": "*u8",
             "y_ptr": "*fp32"}  # fmt: skip
BF16_MMA = "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32"
WGMMA = ["wgmma.commit_group.sync.aligned", "wgmma.fence.sync.aligned", "{}",
         "wgmma.wait_group.sync.aligned"]  # fmt: skip
GEMM_PTRS = {"x_ptr": "*bf16", "w_ptr": "*bf16", "s_ptr": "*bf16", "out_ptr": "*fp32",
             "part_ptr": "*fp32", "count_ptr": "*i32"}  # fmt: skip
FP8_GEMM_PTRS = {**GEMM_PTRS, "w_ptr": "*fp8e4nv", "s_ptr": "*u8"}
MERGED_PTRS = {"x_ptr": "*bf16", "w0": "*fp8e4nv", "s0": "*u8", "out0": "*bf16",
               "w1": "*bf16", "s1": "*bf16", "out1": "*fp32", "part_ptr": "*fp32",
               "count_ptr": "*i32"}  # fmt: skip
# the dense GEMMs at decode: a warpgroup MMA of 64 weight rows x 16 tokens, FP8 x FP8 (W8A8)
BF16_WGMMA = [m.format("wgmma.mma_async.sync.aligned.m64n16k16.f32.bf16.bf16") for m in WGMMA]
FP8_WGMMA = [m.format("wgmma.mma_async.sync.aligned.m64n16k32.f32.e4m3.e4m3") for m in WGMMA]
# (launch, kernel, argument types, constexprs the module names otherwise, MMA of the GPU build)
BUILDS = [
    ("window", "attend", ATTN_PTRS, {"W": 8, "ALIGNED": True}, [BF16_MMA]),
    ("wo_a", "kernel", GEMM_PTRS, {}, BF16_WGMMA),
    ("wq_a_fp8", "kernel", FP8_GEMM_PTRS, {}, FP8_WGMMA),
    # each part its own MMA: FP8 x FP8 for the W8A8 part, bf16 for the bf16 one
    ("merged", "kernel", MERGED_PTRS, {}, sorted(set(FP8_WGMMA + BF16_WGMMA))),
    ("indexer", "score", IDX_PTRS, {"NOPE": 48}, [BF16_MMA]),
    ("shared_fp8", "gate_up_kernel", FP8_GATE_UP, SPREAD, [BF16_MMA]),
    (
        "experts_fp32",
        "down_kernel",
        FP32_DOWN,
        {"BM": 16, "BN": 64, "BK": 128, "BLOCK_E": 4, "SLOTS": False},
        [],
    ),
]


def test_gpu_renders_build_for_sm90_with_bf16_tensor_cores(tmp_path):
    """Compiled ahead of time for sm_90 (no GPU needed): each helper's dot is a bf16 MMA
    with the switch off, and an fp32 run's stays an fp32 (FMA) product."""
    jobs = []
    for name, kernel, types, consts, _ in BUILDS:
        path = tmp_path / f"{name}.py"
        path.write_text(renders(name)[1])
        jobs.append([str(path), kernel, types, consts])
    assert mma_of(jobs, tmp_path) == [mma for *_, mma in BUILDS]
