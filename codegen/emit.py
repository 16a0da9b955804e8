"""The kernels of a plan as source files, so a person can read every kernel it launches:
one file per distinct (template, constants), named `<template>_<sha8>.py`.

`kernel_operands` is the one description of a launch's operands that a template is
rendered for; `v4c compile` and the bound program both use it, so the files written here
are byte for byte the kernels a run of the plan loads (in the plan's activation dtype).
"""

from __future__ import annotations

import hashlib

from v4c.codegen.jit import params_for
from v4c.codegen.params import Shapes
from v4c.codegen.render import render
from v4c.errors import V4CError
from v4c.ir.plan import Launch, Plan


def kernel_operands(launch: Launch, activations: str | None) -> Shapes:
    """(shape at the entry's limits, dtype, format) of each operand: IR-bf16 values and
    dense weights are held in `activations` ("bf16" or "fp32"); a weight's format is the
    plan's (None for the other operands)."""
    return [
        (ref.shape, activations if ref.dtype == "bf16" and activations else ref.dtype, ref.format)
        for ref in launch.inputs
    ]


def plan_kernels(plan: Plan) -> tuple[dict[str, str], dict[tuple[str, str], str]]:
    """(file name -> source, (entry, node) -> file name) over both entry points. A launch
    whose template is missing or refuses its constants has no file (the report says so)."""
    files: dict[str, str] = {}
    where: dict[tuple[str, str], str] = {}
    activations = plan.options["dtype"]
    for entry_name, entry in plan.entries.items():
        for launch in entry.launches:
            if launch.kind != "kernel":
                continue
            shapes = kernel_operands(launch, activations)
            try:
                source = render(params_for(launch.op, launch.constants, shapes))
            except (V4CError, ValueError):
                continue
            name = f"{launch.op}_{hashlib.sha256(source.encode()).hexdigest()[:8]}.py"
            files[name] = source
            where[(entry_name, launch.node)] = name
    return files, where
