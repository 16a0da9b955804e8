"""Ahead-of-time builds for a GPU that is not here: every Triton launch of a plan, compiled for
a target capability with no driver, never run.

How: each entry's `Program` is bound on torch's `meta` device with the Triton backend
(weights, caches and arena are shapes without storage), and one step per bucket runs with
`JITFunction.__getitem__` replaced by a recorder, so every `kernel[grid](...)` a rendered
module makes is captured with its grid and arguments instead of launched (library GEMMs run
on `meta`, which costs nothing). Each captured launch is specialised as Triton's launcher
would (pointer dtypes, 16-byte alignment, ints equal to 1 or divisible by 16) and compiled
by `triton.compile` against `GPUTarget("cuda", cap, 32)`; its facts (codegen/asm.py) are
cached on disk by a hash of the kernel's source, signature, constants, target and Triton
version, so a second compile only binds and reads the cache.

It must run without TRITON_INTERPRET: under it `@triton.jit` helpers are interpreted
functions and templates pick interpreter block sizes (tests run it in a subprocess:
`python -m v4c.codegen.lens`, and tests/codegen/sm90_build.py over `compile_source`).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from v4c.codegen.targets import Target
from v4c.errors import V4CError
from v4c.envs import cache_dir, triton_interpret

TORCH_TO_TRITON = {
    torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32",
    torch.float64: "fp64", torch.int8: "i8", torch.int16: "i16", torch.int32: "i32",
    torch.int64: "i64", torch.uint8: "u8", torch.bool: "i1",
    torch.float8_e4m3fn: "fp8e4nv", torch.float8_e5m2: "fp8e5", torch.float8_e8m0fnu: "u8",
}  # fmt: skip
OPTIONS = ("num_warps", "num_stages", "num_ctas", "maxnreg")
FACTS_VERSION = 2  # bump when codegen/asm.py reads a build differently: old facts go stale


class AotError(V4CError):
    """A kernel cannot be built ahead of time (or the lens runs under the interpreter)."""


@dataclass
class Captured:
    """One `kernel[grid](...)` a rendered module made."""

    fn: Any  # the JITFunction
    grid: tuple[int, int, int]
    args: dict[str, Any]  # parameter name -> value (defaults filled in)
    options: dict[str, Any]


@contextlib.contextmanager
def recording() -> Iterator[list[Captured]]:
    """Within: a JIT kernel launched with a grid is recorded, not run."""
    from triton.runtime.jit import JITFunction

    seen: list[Captured] = []

    def getitem(fn, grid):
        def record(*args, **kwargs):
            names = fn.arg_names
            bound = dict(zip(names, args))
            bound |= {k: v for k, v in kwargs.items() if k in names}
            for p in fn.params:
                if p.name not in bound and p.has_default:
                    bound[p.name] = p.default
            g = grid(bound) if callable(grid) else grid
            g = tuple(int(x) for x in g) + (1,) * (3 - len(g))
            options = {k: v for k, v in kwargs.items() if k in OPTIONS}
            seen.append(Captured(fn, g, bound, options))

        return record

    had = "__getitem__" in JITFunction.__dict__
    old = JITFunction.__dict__.get("__getitem__")
    JITFunction.__getitem__ = getitem
    try:
        yield seen
    finally:
        if had:
            JITFunction.__getitem__ = old
        else:
            del JITFunction.__getitem__


def specialise(c: Captured) -> tuple[dict, dict, dict]:
    """(signature, constexprs, attrs) as Triton's launcher makes them: a tensor is a typed
    pointer, 16-byte aligned when its offset is (allocations are); an int is i32/i64, a
    constant when it is 1, marked divisible by 16 when it is; a float is fp32."""
    signature, constexprs, attrs = {}, {}, {}
    for i, p in enumerate(c.fn.params):
        value = c.args[p.name]
        key = (i,)
        if p.is_constexpr or value is None:
            signature[p.name], constexprs[key] = "constexpr", value
        elif isinstance(value, torch.Tensor):
            signature[p.name] = "*" + TORCH_TO_TRITON[value.dtype]
            aligned = value.storage_offset() * value.element_size() % 16 == 0
            if aligned and not p.do_not_specialize_on_alignment:
                attrs[key] = [["tt.divisibility", 16]]
        elif isinstance(value, bool):
            signature[p.name] = "i1"
        elif isinstance(value, int):
            if value == 1 and not p.do_not_specialize:
                signature[p.name], constexprs[key] = "constexpr", 1
                continue
            signature[p.name] = "i32" if -(2**31) <= value < 2**31 else "i64"
            if value % 16 == 0 and not p.do_not_specialize:
                attrs[key] = [["tt.divisibility", 16]]
        elif isinstance(value, float):
            signature[p.name] = "fp32"
        else:
            raise AotError(f"{c.fn.__name__}: argument {p.name} of type {type(value).__name__}")
    return signature, constexprs, attrs


def build_key(c: Captured, target: Target) -> str:
    import triton

    signature, constexprs, attrs = specialise(c)
    parts = [
        c.fn.cache_key, signature, sorted((k, repr(v)) for k, v in constexprs.items()),
        sorted(attrs.items()), sorted(c.options.items()), target.name, triton.__version__,
        FACTS_VERSION,
    ]  # fmt: skip
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()


def compile_facts(c: Captured, target: Target) -> dict:
    """Compile one launch for `target` and read what it will do (codegen/asm.py)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from v4c.codegen.asm import dot_types, facts

    signature, constexprs, attrs = specialise(c)
    gpu = GPUTarget("cuda", target.capability, target.warp_size)
    log = io.StringIO()
    knobs = getattr(getattr(triton, "knobs", None), "nvidia", None)
    with _knob(knobs, "dump_ptxas_log", True), contextlib.redirect_stdout(log):
        try:
            built = triton.compile(
                ASTSource(c.fn, signature, constexprs, attrs), target=gpu, options=c.options
            )
        except Exception as err:  # Triton raises many types; the lens reports which kernel
            raise AotError(f"{c.fn.__name__} for {target.name}: {err}".strip()[:2000]) from None
    meta = built.metadata
    return {
        "warps": meta.num_warps,
        "stages": meta.num_stages,
        "smem": meta.shared,
        "dots": dot_types(built.asm["ttir"]),
        **facts(built.asm["ptx"], built.asm.get("cubin"), log.getvalue(), target.capability),
    }


@contextlib.contextmanager
def _knob(ns, name: str, value) -> Iterator[None]:
    """Set a Triton knob if this Triton has it (3.9 prints the ptxas -v log with it)."""
    if ns is None or not hasattr(ns, name):
        yield
        return
    old = getattr(ns, name)
    setattr(ns, name, value)
    try:
        yield
    finally:
        setattr(ns, name, old)


def cached_facts(c: Captured, target: Target, root: Path | None = None, on_build=None) -> dict:
    """`compile_facts`, read from `<cache>/aot/<target>/<key>.json` when built before;
    `on_build(kernel name)` is told of each build that was not."""
    key = build_key(c, target)
    path = (root or cache_dir()) / "aot" / target.name / key[:2] / f"{key}.json"
    if path.exists():
        return json.loads(path.read_text())
    if on_build:
        on_build(c.fn.__name__)
    found = compile_facts(c, target)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # renamed into place: atomic
    text = json.dumps(found, sort_keys=True)
    tmp.write_text(text)
    tmp.replace(path)
    return json.loads(text)  # as a cached read gives it (JSON keys), so output is the same


def check_not_interpreted() -> None:
    if triton_interpret():
        raise AotError(
            "ahead-of-time builds need the Triton compiler: unset TRITON_INTERPRET "
            "(the interpreter cannot compile kernels)"
        )


def compile_source(path: str, kernel: str, types: dict, consts: dict, target: Target):
    """Compile one kernel of a rendered source file for `target`: `types` maps arguments
    to Triton types (others are i32), `consts` constexprs (others: the module's constant
    of that name). Returns Triton's compiled kernel (its `.asm` holds ttir, ptx, cubin)."""
    import importlib.util

    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    spec = importlib.util.spec_from_file_location(f"aot_{kernel}_{Path(path).stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    fn = getattr(module, kernel)
    names = [p.name for p in fn.params if p.is_constexpr]
    values = {n: consts[n] if n in consts else getattr(module, n) for n in names}
    signature = {n: "constexpr" if n in values else types.get(n, "i32") for n in fn.arg_names}
    positions = {(fn.arg_names.index(n),): v for n, v in values.items()}
    gpu = GPUTarget("cuda", target.capability, target.warp_size)
    return triton.compile(ASTSource(fn, signature, positions), target=gpu)
