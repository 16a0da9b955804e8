"""The package as installed: every source folder is listed in pyproject, import is light."""

from __future__ import annotations

import subprocess
import sys
import tomllib

from tests.conftest import ROOT


def test_every_package_folder_is_in_pyproject():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    dirs = config["package-dir"]
    listed = set(config["packages"])
    for name, folder in dirs.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            package = ".".join([name, *rel.parts])
            assert package in listed, (
                f"{package} ({init.parent}) is missing from pyproject packages"
            )


def test_import_is_light():
    heavy = "{'torch', 'triton', 'transformers'}"
    code = f"import sys, v4c.cli, v4c.ir.ops; print(sorted({heavy} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
