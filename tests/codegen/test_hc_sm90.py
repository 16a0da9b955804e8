"""The split-K HC kernel of every kind builds for sm_90 at Flash dims (n = 4, D = 4096) with no
GPU (Triton's compiler against GPUTarget, the recipe of sm90_build.py), its fn projection an
fp32 FMA product (IEEE `tl.dot`: no MMA instruction). The interpreter runs code the GPU
compiler refuses (and the reverse); this is the check that the GPU path compiles."""

from __future__ import annotations


import pytest

from tests.codegen.sm90_build import mma_of
from v4c.codegen import jit
from v4c.codegen.render import render
from v4c.ir.ops.hc import HcHead, HcPostHeadNorm, HcPostPreNorm, HcPre, HcPreNorm

N, D = 4, 4096
PTRS = ["a_ptr", "x_ptr", "xn_ptr", "w_ptr", "y_ptr"]  # bf16; every other pointer fp32
TYPES = {
    **{name: "*bf16" for name in PTRS},
    **{name: "*fp32" for name in ["post_ptr", "comb_ptr", "fn_ptr", "base_ptr", "scale_ptr"]},
    **{"post_out_ptr": "*fp32", "comb_out_ptr": "*fp32", "part_ptr": "*fp32"},
    **{"count_ptr": "*i32", "eps": "fp32", "norm_eps": "fp32", "rms_eps": "fp32"},
}


def flash_params(op):
    rows = N if "head" in op.kind else (2 + N) * N
    shapes = {
        "a": ((1, 1, D), "bf16"), "X": ((1, 1, N, D), "bf16"), "post": ((1, 1, N), "fp32"),
        "comb": ((1, 1, N, N), "fp32"), "fn": ((rows, N * D), "fp32"), "base": ((rows,), "fp32"),
        "scale": ((1 if rows == N else 3,), "fp32"), "norm": ((D,), "bf16"),
    }  # fmt: skip
    return jit.params_for(op.kind, op.attrs(), [shapes[r] for r in op.operand_roles()])


@pytest.mark.slow
def test_flash_hc_kernels_build_for_sm90_without_mma(tmp_path):
    jobs = []
    for op in [HcPre(iters=20), HcPreNorm(), HcPostPreNorm(), HcHead(), HcPostHeadNorm()]:
        params = flash_params(op)
        path = tmp_path / f"{op.kind}.py"
        path.write_text(render(params))
        consts = {"NP": params.streams_p, "RP": params.rows_p, "BLOCK_D": params.block_d,
                  "BLOCK_S": params.block_s, "DP": params.dim_p}  # fmt: skip
        if params.iters is not None:
            consts["ITERS"] = params.iters
        jobs.append([str(path), "kernel", TYPES, consts])
    assert mma_of(jobs, tmp_path) == [[]] * len(jobs)
