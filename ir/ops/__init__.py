"""Every registered op, one module per op family (the families of `v4c.ir.semantics` and
`v4c.codegen.ops`); importing this package fills `v4c.ir.op.OPS`."""

from v4c.ir.ops import (
    attention,
    collective,
    compressor,
    core,
    gemm,
    hc,
    indexer,
    moe,
    norm,
    rope,
)

__all__ = [
    "attention",
    "collective",
    "compressor",
    "core",
    "gemm",
    "hc",
    "indexer",
    "moe",
    "norm",
    "rope",
]
