"""The interpreter's upcast switch (kernels/dots.py): the GPU render of every template that
calls `tl.dot` differs from the interpreter's only in its `UPCAST` constant (and the params
header), so both run the same kernel body, and it is valid Python. The interpreter's
numerics are the other kernel tests'; the GPU's bf16 dots are checked by `pytest -m gpu`."""

from __future__ import annotations

import ast
import difflib
from pathlib import Path

import pytest

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
IDX_IN = [((1, 2, 32), "bf16"), ((1, 2, 64), "bf16"), ((1, 2), "i64"), ((1,), "i64"),
          ((256, 32), "bf16"), ((4, 64), "bf16"), ((1, 8, 64), "bf16")]  # fmt: skip
SWIGLU = {"limit": 7.0}
DENSE = [((1, 2, 256), "bf16")] + [((512, 256), "fp8:128x128"), ((256, 512), "fp8:128x128")] * 2
EXPERTS = [((1, 2, 256), "bf16"), ((1, 2, 2), "i64"), ((5,), "i64"), ((1, 2, 2), "fp32")]
FP4 = [((4, 512, 256), "fp4:32"), ((4, 256, 512), "fp4:32"), ((4, 512, 256), "fp4:32")]

LAUNCHES = {
    "window": ("sparse_attention", {**SPARSE, "ratio": 0, "topk": 0}, BF16_ATTN[:6]),
    "csa": ("sparse_attention", {**SPARSE, "ratio": 4}, BF16_ATTN),
    "hca": ("sparse_attention", {**SPARSE, "ratio": 128}, BF16_ATTN[:7]),
    "wo_a": ("grouped_linear", {"groups": 2}, [((1, 2, 16, 64), "bf16"), ((64, 512), "bf16")]),
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
    return render(kind, params), render(kind, gpu)


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
    dotted = {"sparse_attention", "grouped_linear", "indexer_topk", "swiglu", "grouped_swiglu"}
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
