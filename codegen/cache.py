"""The kernel cache: rendered sources on disk, keyed by everything that went into them, and
imported from there.

Key = sha256 of {sha256 of the source, template, Triton version, device, codegen version}.
Layout, readable first: `<root>/<v4c version>/<device>/kernels/<template>/<key16>/kernel.py`
with `key.json` beside it (every key component in clear text). Writes are atomic (a temp
file renamed into place), so concurrent builders never see a half-written kernel.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from v4c.codegen import CODEGEN_VERSION
from v4c.errors import V4CError
from v4c.envs import triton_interpret


@dataclass(frozen=True)
class CachedKernel:
    template: str
    key: str
    path: Path

    def load(self) -> ModuleType:
        return _import(self.path, f"v4c_kernel_{self.template}_{self.key[:16]}")


def device_tag() -> str:
    """`sm90` for a CUDA device of capability 9.0, `cpu` for the interpreter."""
    import torch

    if torch.cuda.is_available() and not triton_interpret():
        major, minor = torch.cuda.get_device_capability()
        return f"sm{major}{minor}"
    return "cpu"


def cache_key(source: str, template: str, device: str) -> tuple[str, dict]:
    import triton

    parts = {
        "source_sha256": hashlib.sha256(source.strip().encode()).hexdigest(),
        "template": template,
        "triton": triton.__version__,
        "device": device,
        "codegen": CODEGEN_VERSION,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest(), parts


def store(root: Path, template: str, source: str, device: str | None = None) -> CachedKernel:
    """Write `source` into the cache (if not there yet) and return where it lives."""
    from v4c import __version__

    device = device or device_tag()
    key, parts = cache_key(source, template, device)
    folder = root / __version__ / device / "kernels" / template / key[:16]
    path = folder / "kernel.py"
    if not path.exists():
        try:
            folder.mkdir(parents=True, exist_ok=True)
            _write_atomic(folder / "key.json", json.dumps(parts, indent=1, sort_keys=True) + "\n")
            _write_atomic(path, source)
        except OSError as err:
            raise V4CError(
                f"cannot write the kernel cache {root}: {err.strerror or err}; "
                "set V4C_CACHE_DIR to a writable folder"
            ) from None
    return CachedKernel(template, key, path)


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _import(path: Path, name: str) -> ModuleType:
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
