"""The expert kernels of a Flash layer built ahead of time for sm_90 (no GPU: Triton's own
ptxas), read from their PTX and SASS, with a per-layer estimate against the H200's roofline:

    env -u TRITON_INTERPRET python bench/experts_sm90.py --tokens 1 [--json out.json]

Each template is rendered for the GPU and its `run` is called on `meta` tensors at the step's
shapes with the kernels swapped for recorders, so the grids, tiles and warps built here are
the ones a real step launches. Per launch: CTAs, the MMA instructions, the global loads of the
PTX (cp.async sizes and ld.global widths), registers and spills (`ptxas -v`), and the SASS
instructions of the main loop (the body between the last backward branch and its target).

Estimates, per launch: memory = weight bytes read (the routed experts a step touches, at most
all; the shared expert whole; FP8/FP4 with their scales) / 4.8 TB/s (H200 HBM3e); issue =
loop SASS x loop trips x warps x CTAs / (132 SMs x 4 schedulers x 1.98 GHz), one warp instruction
per scheduler per cycle (an upper bound on issue rate; every CTA counted as busy, which holds
at decode, where each row tile is real, and overcounts the early exits of a prefill's grid
bound). A kernel's estimate is the larger of the two.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from v4c.codegen import jit
from v4c.codegen.render import render
from v4c.ir.semantics.quant import QuantWeight

HBM = 4.8e12  # B/s, H200 SXM datasheet
ISSUE = 132 * 4 * 1.98e9  # warp instructions / s: SMs x schedulers x boost clock
BIN = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"
D, I, E, K = 4096, 2048, 256, 6  # Flash
CP_ASYNC = r"cp\.async\.\w+\.shared\.global \[[^]]*\], \[[^]]*\], (0x\w+)"  # its byte count
LD_GLOBAL = r"ld\.global[\w.]*"
TYPES = {torch.bfloat16: "*bf16", torch.float32: "*fp32", torch.int64: "*i64",
         torch.int32: "*i32", torch.int8: "*i8", torch.uint8: "*u8",
         torch.float8_e4m3fn: "*fp8e4nv"}  # fmt: skip


class Recorder:
    """Stands in for a @triton.jit kernel: `kernel[grid](*args, **kw)` records the launch."""

    def __init__(self, fn, launches):
        self.fn, self.launches = fn, launches

    def __getitem__(self, grid):
        return lambda *args, **kw: self.launches.append((self.fn, grid, args, kw))


def quant(shape, fmt):
    rows, cols = shape[:-1], shape[-1]
    if fmt == "fp4":
        data = torch.empty(*rows, cols // 2, dtype=torch.int8, device="meta")
        return QuantWeight(data, torch.empty(*rows, cols // 32, dtype=torch.uint8, device="meta"),
                           "fp4")  # fmt: skip
    data = torch.empty(*shape, dtype=torch.float8_e4m3fn, device="meta")
    blocks = (*rows[:-1], -(-rows[-1] // 128), -(-cols // 128))
    return QuantWeight(data, torch.empty(blocks, dtype=torch.uint8, device="meta"), "fp8")


def launches(kind, attrs, ins, folder):
    """The kernels `kind`'s GPU render launches on `ins`: [(name, fn, grid, args, kw)]."""
    from v4c.codegen.params import describe

    params = jit.params_for(kind, attrs, [describe(t) for t in ins])
    params = type(params)(**{**params.model_dump(), "upcast": False})
    path = folder / f"{kind}.py"
    path.write_text(render(params))
    spec = importlib.util.spec_from_file_location(f"sm90_{kind}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    seen = []
    for name in ("gate_up_kernel", "down_kernel"):
        setattr(module, name, Recorder(getattr(module, name), seen))
    module.run(*ins)
    return [(f"{kind}.{fn.fn.__name__}", fn, grid, args, kw) for fn, grid, args, kw in seen]


def build(fn, args, kw, out: Path) -> dict:
    """Compile one recorded launch for sm_90 -> facts of its PTX and SASS."""
    kw = dict(kw)
    warps = kw.pop("num_warps", 4)
    names = fn.arg_names
    values = dict(zip(names, args)) | kw
    const = {n: v for n, v in values.items() if fn.params[names.index(n)].is_constexpr}
    sig = {n: "constexpr" if n in const else TYPES[v.dtype] if torch.is_tensor(v) else "i32"
           for n, v in values.items()}  # fmt: skip
    aligned = {(names.index(n),): [["tt.divisibility", 16]] for n, t in sig.items() if "*" in t}
    compiled = triton.compile(ASTSource(fn, sig, const, aligned), target=GPUTarget("cuda", 90, 32),
                              options={"num_warps": warps})  # fmt: skip
    ptx = compiled.asm["ptx"]
    out.with_suffix(".cubin").write_bytes(compiled.asm["cubin"])
    ptxas = [str(BIN / "ptxas-blackwell"), "-v", "--gpu-name", "sm_90a", "-o", os.devnull, "-"]
    ptxas = subprocess.run(ptxas, input=ptx, capture_output=True, text=True).stderr
    sass = subprocess.run([str(BIN / "nvdisasm"), "-c", str(out.with_suffix(".cubin"))],
                          capture_output=True, text=True).stdout  # fmt: skip
    return dict(
        warps=warps, constexprs={n: v for n, v in const.items() if n.isupper() and len(n) <= 2},
        mma=sorted(set(re.findall(r"\b(?:wgmma\.mma_async|mma)\.[\w.]+", ptx))),
        cp_async_bytes=sorted({int(b, 16) for b in re.findall(CP_ASYNC, ptx)}),
        ld_global={k: ptx.count(k + " ") for k in sorted(set(re.findall(LD_GLOBAL, ptx)))},
        registers=int(m.group(1)) if (m := re.search(r"Used (\d+) registers", ptxas)) else None,
        spill_bytes=sum(int(s) for s in re.findall(r"(\d+) bytes spill stores", ptxas)),
        loop_sass=loop_length(sass),
    )  # fmt: skip


def loop_length(sass: str) -> int:
    """SASS instructions of the main loop: the longest span from a backward branch's target
    label to the branch."""
    addrs, labels, back = [], {}, []
    pending = []
    for line in sass.splitlines():
        if m := re.match(r"(\.L_x_\d+):", line):
            pending.append(m.group(1))
        elif m := re.match(r"\s+/\*([0-9a-f]{4,})\*/", line):
            addrs.append(int(m.group(1), 16))
            labels |= {label: addrs[-1] for label in pending}
            pending = []
            if b := re.search(r"BRA `?\(?(\.L_x_\d+)", line):
                back.append((b.group(1), addrs[-1]))
    spans = [sum(labels[t] <= a <= at for a in addrs) for t, at in back if labels.get(t, at) < at]
    return max(spans, default=0)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tokens", type=int, default=1, help="tokens in the step (batch x T)")
    p.add_argument("--json", type=Path)
    a = p.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET"):
        sys.exit("unset TRITON_INTERPRET: the interpreter's kernels cannot be compiled")
    t, meta = a.tokens, dict(device="meta")
    x = torch.empty(1, t, D, dtype=torch.bfloat16, **meta)
    slots = torch.empty(1, t, K, dtype=torch.int64, **meta)
    routed = [x, slots, torch.empty(E + 1, dtype=torch.int64, **meta), slots.float()]
    routed += [quant((E, I, D), "fp4"), quant((E, D, I), "fp4"), quant((E, I, D), "fp4")]
    shared = [x, quant((I, D), "fp8"), quant((D, I), "fp8"), quant((I, D), "fp8")]
    experts = min(E, t * K)  # the routed experts a step reads at most
    fp4_bytes = experts * I * D * (1 / 2 + 1 / 32)  # per matrix: codes and per-32 scales
    fp8_bytes = I * D * (1 + 1 / 128**2)
    report = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        jobs = launches("grouped_swiglu", {"limit": 10.0}, routed, folder)
        jobs += launches("swiglu", {"limit": 10.0}, shared, folder)
        for name, fn, grid, args, kw in jobs:
            facts = build(fn, args, kw, folder / name)
            ctas = math.prod(grid)
            weight = fp4_bytes if name.startswith("grouped") else fp8_bytes
            weight *= 2 if "gate_up" in name else 1
            trips = kw.get("RANGE", D if "gate_up" in name else I) // kw["BK"]  # one range
            issue_us = facts["loop_sass"] * trips * facts["warps"] * ctas / ISSUE * 1e6
            memory_us = weight / HBM * 1e6
            facts |= dict(grid=list(grid), ctas=ctas, weight_mb=round(weight / 1e6, 2),
                          memory_us=round(memory_us, 2), issue_us=round(issue_us, 2))  # fmt: skip
            report[name] = facts
    total = sum(max(f["memory_us"], f["issue_us"]) for f in report.values())
    roof = sum(f["memory_us"] for f in report.values())
    report["layer"] = dict(tokens=t, estimate_us=round(total, 1), roofline_us=round(roof, 1),
                           of_roofline=round(roof / total, 2))  # fmt: skip
    print(json.dumps(report, indent=1))
    if a.json:
        a.json.write_text(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
