"""The `env` stage of `bench/gpu_check.sh`: which python, packages and device the check runs
on (`env.json`), and that the v4c sources import from there. Exits non-zero without CUDA
unless `--cpu-ok` (the dry run)."""

from __future__ import annotations

import json
import platform
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "missing"


def main(argv: list[str]) -> int:
    import torch

    import v4c.compile  # noqa: F401  (the sub-packages resolve: v4c.ir, v4c.passes, ...)

    cuda = torch.cuda.is_available()
    info = {
        "python": platform.python_version(),
        **{p: _version(p) for p in ("torch", "triton", "transformers", "pydantic", "pytest")},
        "cuda": torch.version.cuda,
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "v4c": str(Path(v4c.compile.__file__).parent),
    }
    Path(argv[0]).write_text(json.dumps(info, indent=1, sort_keys=True) + "\n")
    print(info)
    if not cuda and "--cpu-ok" not in argv:
        print("no CUDA device", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
