"""Build kernels of rendered sources for sm_90 ahead of time, with no GPU (Triton ships the
CUDA compiler's ptxas), and print the MMA instructions of each one's PTX as JSON. Run as a
script in a fresh process without TRITON_INTERPRET: under it `@triton.jit` helpers are
interpreted functions that cannot be compiled.

argv[1]: JSON list of [source path, kernel name, {arg: Triton type}, {constexpr: value}];
an argument in neither is "i32", a constexpr not given is the module's constant of its name."""

import importlib.util
import json
import re
import sys

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

TARGET = GPUTarget("cuda", 90, 32)


def build(path: str, kernel: str, types: dict, consts: dict) -> list[str]:
    spec = importlib.util.spec_from_file_location(f"sm90_{kernel}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    fn = getattr(module, kernel)
    constexprs = [p.name for p in fn.params if p.is_constexpr]
    values = {n: consts[n] if n in consts else getattr(module, n) for n in constexprs}
    signature = {n: "constexpr" if n in values else types.get(n, "i32") for n in fn.arg_names}
    positions = {(fn.arg_names.index(n),): v for n, v in values.items()}
    compiled = triton.compile(ASTSource(fn, signature, positions), target=TARGET)
    return sorted(set(re.findall(r"\b(?:wgmma|mma)\.[\w.]+", compiled.asm["ptx"])))


if __name__ == "__main__":
    print(json.dumps([build(*job) for job in json.loads(sys.argv[1])]))
