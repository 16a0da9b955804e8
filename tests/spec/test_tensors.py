"""The checkpoint tensor list against the Flash header facts of V4_REFERENCE §13.1."""

from __future__ import annotations

import pytest

from v4c.spec import load_spec
from v4c.spec.tensors import checkpoint_tensors


@pytest.fixture(scope="module")
def flash():
    return {t.name: t for t in checkpoint_tensors(load_spec("flash"))}


@pytest.mark.parametrize(
    "name, shape, dtype, storage",
    [
        ("embed.weight", (129280, 4096), "bf16", None),
        ("hc_head_fn", (4, 16384), "fp32", None),
        ("layers.0.hc_attn_fn", (24, 16384), "fp32", None),
        ("layers.0.hc_ffn_scale", (3,), "fp32", None),
        ("layers.0.attn.attn_sink", (64,), "fp32", None),
        ("layers.0.attn.wq_a.weight", (1024, 4096), "bf16", "fp8"),
        ("layers.0.attn.wq_b.weight", (32768, 1024), "bf16", "fp8"),
        ("layers.0.attn.wkv.weight", (512, 4096), "bf16", "fp8"),
        ("layers.0.attn.wo_a.weight", (8192, 4096), "bf16", "fp8"),
        ("layers.0.attn.wo_b.weight", (4096, 8192), "bf16", "fp8"),
        ("layers.2.attn.compressor.wkv.weight", (1024, 4096), "bf16", None),
        ("layers.2.attn.compressor.ape", (4, 1024), "fp32", None),
        ("layers.3.attn.compressor.wgate.weight", (512, 4096), "bf16", None),
        ("layers.3.attn.compressor.ape", (128, 512), "fp32", None),
        ("layers.2.attn.indexer.wq_b.weight", (8192, 1024), "bf16", "fp8"),
        ("layers.2.attn.indexer.weights_proj.weight", (64, 4096), "bf16", None),
        ("layers.2.attn.indexer.compressor.wkv.weight", (256, 4096), "bf16", None),
        ("layers.2.attn.indexer.compressor.ape", (4, 256), "fp32", None),
        ("layers.2.attn.indexer.compressor.norm.weight", (128,), "bf16", None),
        ("layers.0.ffn.gate.tid2eid", (129280, 6), "i64", None),
        ("layers.3.ffn.gate.bias", (256,), "fp32", None),
        ("layers.3.ffn.experts.{e}.w1.weight", (2048, 4096), "bf16", "fp4"),
        ("layers.3.ffn.experts.{e}.w2.weight", (4096, 2048), "bf16", "fp4"),
        ("layers.3.ffn.shared_experts.w3.weight", (2048, 4096), "bf16", "fp8"),
        ("mtp.0.e_proj.weight", (4096, 4096), "bf16", "fp8"),
        ("mtp.0.hc_head_base", (4,), "fp32", None),
        ("mtp.0.ffn.gate.bias", (256,), "fp32", None),
    ],
)
def test_flash_tensor(flash, name, shape, dtype, storage):
    t = flash[name]
    assert (t.shape, t.dtype, t.storage) == (shape, dtype, storage)


def test_flash_absent_tensors(flash):
    assert "layers.0.attn.compressor.ape" not in flash  # sliding layer
    assert "layers.3.attn.indexer.wq_b.weight" not in flash  # HCA has no indexer
    assert "layers.2.ffn.gate.bias" not in flash and "layers.3.ffn.gate.tid2eid" not in flash
    assert "mtp.0.attn.compressor.ape" not in flash and "mtp.0.ffn.gate.tid2eid" not in flash
    assert "mtp.0.embed.weight" not in flash and "mtp.0.head.weight" not in flash  # shared


def test_names_are_unique_and_experts_stacked(flash):
    tensors = checkpoint_tensors(load_spec("flash"))
    assert len({t.name for t in tensors}) == len(tensors)
    assert flash["layers.3.ffn.experts.{e}.w1.weight"].stack == 256
