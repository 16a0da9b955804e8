"""The kernels of a plan as source files, so a person can read every kernel it launches:
one file per distinct (template, constants), named `<template>_<sha8>.py`."""

from __future__ import annotations

import hashlib

from v4c.codegen.jit import params_for
from v4c.codegen.render import render
from v4c.errors import V4CError
from v4c.ir.plan import Launch, Plan


def is_generated(launch: Launch) -> bool:
    return not launch.kernel.startswith(("library:", "view:"))


def plan_kernels(plan: Plan) -> tuple[dict[str, str], dict[tuple[str, str], str]]:
    """(file name -> source, (entry, node) -> file name) over both entry points. A launch
    whose template is missing or refuses its constants has no file (the report says so)."""
    files: dict[str, str] = {}
    where: dict[tuple[str, str], str] = {}
    for entry_name, entry in plan.entries.items():
        for launch in entry.launches:
            if not is_generated(launch):
                continue
            shapes = [(ref.shape, ref.dtype) for ref in launch.inputs]
            try:
                source = render(launch.op, params_for(launch.op, launch.constants, shapes))
            except (V4CError, ValueError):
                continue
            name = f"{launch.op}_{hashlib.sha256(source.encode()).hexdigest()[:8]}.py"
            files[name] = source
            where[(entry_name, launch.node)] = name
    return files, where
