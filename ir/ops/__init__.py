"""Every registered op; importing this package fills `v4c.ir.op.OPS`."""

from v4c.ir.ops import attention, core, fused, moe

__all__ = ["attention", "core", "fused", "moe"]
