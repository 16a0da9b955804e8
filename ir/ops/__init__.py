"""Every registered op; importing this package fills `v4c.ir.op.OPS`."""

from v4c.ir.ops import attention, collective, core, fused, moe, sharded

__all__ = ["attention", "collective", "core", "fused", "moe", "sharded"]
