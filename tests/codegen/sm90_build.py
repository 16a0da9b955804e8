"""Build kernels of rendered sources for sm_90 ahead of time, with no GPU, and print the MMA
instructions of each one's PTX as JSON (the build is `v4c.codegen.aot.compile_source`, the
kernel lens's). Run as a script in a fresh process without TRITON_INTERPRET: under it
`@triton.jit` helpers are interpreted functions that cannot be compiled.

argv[1]: JSON list of [source path, kernel name, {arg: Triton type}, {constexpr: value}];
an argument in neither is "i32", a constexpr not given is the module's constant of its name."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from v4c.codegen.aot import compile_source
from v4c.codegen.targets import target


def mma_of(jobs: list, tmp: Path) -> list[list[str]]:
    """Run this script on `jobs` in a fresh process without TRITON_INTERPRET (Triton's own
    cache under `tmp`) -> the MMA instructions of each job's PTX."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp / "triton")
    done = subprocess.run(
        [sys.executable, __file__, json.dumps(jobs)], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


if __name__ == "__main__":
    ptx = [compile_source(*job, target("sm_90")).asm["ptx"] for job in json.loads(sys.argv[1])]
    print(json.dumps([sorted(set(re.findall(r"\b(?:wgmma|mma)\.[\w.]+", p))) for p in ptx]))
