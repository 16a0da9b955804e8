"""What a compiled kernel will do on the hardware, read from its PTX, SASS and ptxas log:
the MMA instructions by kind and operand type, the width of its global loads, registers
and spills. Triton ships ptxas and cuobjdump in its NVIDIA backend; without cuobjdump the
facts come from the PTX (the instructions ptxas is asked to emit)."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from collections import Counter
from pathlib import Path

# PTX: wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 / mma.sync.aligned.m16n8k16
# .row.col.f32.bf16.bf16.f32 -> (wgmma|mma, the A operand's type)
PTX_MMA = re.compile(r"\b(wgmma\.mma_async|mma\.sync)\.[\w.]*?\.(?:m\d+n\d+k\d+)[\w.]*")
PTX_TYPES = ("bf16", "f16", "e4m3", "e5m2", "tf32", "s8", "u8", "f64")
TYPE_NAMES = {"f16": "fp16", "e4m3": "fp8", "e5m2": "fp8", "s8": "int8", "u8": "int8"}
# SASS: HGMMA.64x64x16.F32.BF16 (wgmma), QGMMA (fp8 wgmma), HMMA.16816.F32.BF16 (mma)
SASS_MMA = re.compile(r"\b(HGMMA|QGMMA|IGMMA|HMMA|QMMA|IMMA)\.([\w.]+)")
# LDG.E.128 / LDGSTS.E.BYPASS.128 (cp.async) / UTMALDG; the longer names first and a word end,
# so neither LDGSTS nor the LDGDEPBAR that fences it is read as a bare 4-byte LDG
SASS_LOAD = re.compile(r"\b(LDGSTS|UTMALDG|LDG)\b((?:\.[\w]+)*)")
PTX_LOAD = re.compile(r"\b(ld\.global|cp\.async\.(?:ca|cg)\.shared\.global)([\w.]*)")


def mma_kinds_ptx(ptx: str) -> dict[str, int]:
    """`{"wgmma bf16": n, "mma bf16": n}` over the MMA instructions of the PTX."""
    kinds: Counter[str] = Counter()
    for m in PTX_MMA.finditer(ptx):
        parts = m.group(0).split(".")
        kind = "wgmma" if m.group(1).startswith("wgmma") else "mma"
        after = parts[parts.index(next(p for p in parts if re.fullmatch(r"m\d+n\d+k\d+", p))) :]
        ty = next((p for p in after[2:] if p in PTX_TYPES), "")  # skip the shape, the D type
        kinds[f"{kind} {TYPE_NAMES.get(ty, ty) or 'unknown'}"] += 1
    return dict(sorted(kinds.items()))


def mma_kinds_sass(sass: str) -> dict[str, int]:
    kinds: Counter[str] = Counter()
    for op, mods in SASS_MMA.findall(sass):
        kind = "wgmma" if op.endswith("GMMA") else "mma"
        fields = mods.upper().split(".")
        ty = next((f for f in fields[2:] if f in ("BF16", "F16", "E4M3", "E5M2", "TF32")), "")
        if not ty and op.startswith("Q"):
            ty = "E4M3"
        name = {"F16": "fp16", "E4M3": "fp8", "E5M2": "fp8"}.get(ty, ty.lower() or "int8")
        kinds[f"{kind} {name}"] += 1
    return dict(sorted(kinds.items()))


def _width(mods: str) -> int:
    """Bytes one thread moves in one SASS load: .128 -> 16, .64 -> 8, .U8/.S8 -> 1, .U16/.S16
    -> 2, none -> 4."""
    for flag, size in ((".128", 16), (".64", 8), (".U8", 1), (".S8", 1), (".U16", 2), (".S16", 2)):
        if flag in mods.upper():
            return size
    return 4


def load_widths_sass(sass: str) -> dict[int, int]:
    """Global loads by bytes a thread (static count); a TMA load counts as 16."""
    widths: Counter[int] = Counter()
    for op, mods in SASS_LOAD.findall(sass):
        widths[16 if op == "UTMALDG" else _width(mods)] += 1
    return dict(sorted(widths.items()))


def load_widths_ptx(ptx: str) -> dict[int, int]:
    widths: Counter[int] = Counter()
    for op, mods in PTX_LOAD.findall(ptx):
        if op.startswith("cp.async"):
            widths[16] += 1
            continue
        lanes = 4 if ".v4" in mods else 2 if ".v2" in mods else 1
        bits = re.search(r"\.[bsuf](8|16|32|64)\b", mods)
        widths[lanes * int(bits.group(1)) // 8 if bits else 4] += 1
    return dict(sorted(widths.items()))


def ptxas_facts(log: str) -> dict[str, int | None]:
    """registers, spill bytes (stores + loads) and shared memory from a `ptxas -v` log."""
    regs = re.search(r"Used (\d+) registers", log)
    spills = re.findall(r"(\d+) bytes spill (?:stores|loads)", log)
    smem = re.search(r"(\d+) bytes smem", log)
    return {
        "registers": int(regs.group(1)) if regs else None,
        "spill_bytes": sum(map(int, spills)) if regs else None,
        "ptxas_smem": int(smem.group(1)) if smem else None,
    }


def nvidia_tool(name: str) -> Path | None:
    """A CUDA binary shipped with Triton's NVIDIA backend (else on PATH), or None."""
    try:
        import triton.backends.nvidia as nv

        path = Path(nv.__file__).parent / "bin" / name
        if path.exists():
            return path
    except ImportError:
        pass
    found = shutil.which(name)
    return Path(found) if found else None


def sass_of(cubin: bytes) -> str | None:
    """The SASS of a cubin by `cuobjdump -sass`, or None when it is not available."""
    tool = nvidia_tool("cuobjdump")
    if tool is None:
        return None
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        done = subprocess.run([str(tool), "-sass", f.name], capture_output=True, text=True)
    return done.stdout if done.returncode == 0 else None


def ptxas_log(ptx: str, capability: int) -> str:
    """`ptxas -v` of the PTX (when Triton built from its cache, it ran no ptxas to log)."""
    try:  # the ptxas Triton itself uses for this capability (3.9 ships a newer one too)
        from triton.backends.nvidia.compiler import get_ptxas

        tool = get_ptxas(capability).path
    except (ImportError, TypeError, AttributeError):
        tool = nvidia_tool("ptxas")
    if tool is None:
        return ""
    arch = f"sm_{capability}{'a' if capability >= 90 else ''}"
    with tempfile.NamedTemporaryFile("w", suffix=".ptx") as f:
        f.write(ptx)
        f.flush()
        done = subprocess.run(
            [str(tool), "-v", f"--gpu-name={arch}", f.name, "-o", "/dev/null"],
            capture_output=True, text=True,
        )  # fmt: skip
    return done.stderr + done.stdout


def facts(ptx: str, cubin: bytes | None, log: str, capability: int) -> dict:
    """The per-kernel facts the lens reports, from SASS where cuobjdump exists."""
    if "Used" not in log:
        log = ptxas_log(ptx, capability)
    sass = sass_of(cubin) if cubin else None
    source = "sass" if sass is not None else "ptx"
    return {
        "mma": mma_kinds_sass(sass) if sass is not None else mma_kinds_ptx(ptx),
        "mma_ptx": mma_kinds_ptx(ptx),
        "loads": load_widths_sass(sass) if sass is not None else load_widths_ptx(ptx),
        "read_from": source,
        **ptxas_facts(log),
    }


TTIR_DOT = re.compile(r"tt\.dot(?:_scaled)? [^\n]*?: tensor<[\dx]+x(\w+)>")
TTIR_TYPES = {"bf16": "bf16", "f16": "fp16", "f32": "fp32", "f8E4M3FN": "fp8", "f8E5M2": "fp8"}


def dot_types(ttir: str) -> dict[str, int]:
    """`tl.dot`s of the kernel by operand type (fp32 at TF32 precision counts as tf32)."""
    found: Counter[str] = Counter()
    for line in ttir.splitlines():
        m = TTIR_DOT.search(line)
        if m:
            ty = TTIR_TYPES.get(m.group(1), m.group(1))
            if ty == "fp32" and "inputPrecision = tf32" in line:
                ty = "tf32"
            found[ty] += 1
    return dict(sorted(found.items()))
