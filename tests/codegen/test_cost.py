"""The lens's cost model (codegen/cost.py) and its readers of PTX/SASS (codegen/asm.py), on
numbers worked by hand; no build needed."""

from __future__ import annotations

import pytest

from v4c.codegen import asm, cost
from v4c.codegen.targets import H200, target
from v4c.ir.plan import Launch, Plan, Ref
from v4c.ir.weights import PlanWeight, WeightFormat


def test_estimate_rule_by_hand():
    """4.8 MB on H200 (4.8 TB/s): roofline 1 µs; 66 CTAs of 132 SMs halve the bandwidth,
    4-byte loads quarter it: 8 µs, plus the 2 µs launch."""
    r = cost.estimate(H200, 4.8e6, 0.0, 66, {"loads": {4: 3}, "mma": {}, "dots": {}})
    assert r["roofline_us"] == pytest.approx(1.0)
    assert r["est_us"] == pytest.approx(10.0)
    assert r["bound"] == "memory"
    assert r["flags"] == ["few CTAs (66 < 132 SMs)", "narrow loads (4.0 B)"]


def test_a_grid_below_half_the_sms_is_what_bounds():
    """1 CTA of 132: 1.32 MB at 4.8 TB/s / 132 takes 36.4 µs (0.275 µs at full width)."""
    r = cost.estimate(H200, 1.32e6, 0.0, 1, {"loads": {16: 1}, "mma": {}, "dots": {}})
    assert r["est_us"] == pytest.approx(1.32e6 / (4.8e12 / 132) * 1e6 + 2.0)
    assert r["bound"] == "few CTAs" and r["flags"] == ["few CTAs (1 < 132 SMs)"]


def test_a_dot_without_mma_runs_at_the_fma_rate():
    """67e9 flops of bf16 dots: roofline at 989 TF/s; without MMA at 67 TF/s: 1000 µs."""
    facts = {"loads": {16: 1}, "mma": {}, "dots": {"bf16": 1}}
    r = cost.estimate(H200, 0.0, 67e9, 132, facts)
    assert r["est_us"] == pytest.approx(1000.0 + 2.0)
    assert r["roofline_us"] == pytest.approx(67e9 / 989e12 * 1e6)
    assert r["bound"] == "compute" and r["flags"] == ["dot without MMA"]


def test_library_gemm_is_its_roofline_plus_a_launch():
    r = cost.estimate_library(H200, 48e6, 0.0, "bf16")
    assert r["est_us"] == pytest.approx(10.0 + 2.0) and r["roofline_us"] == pytest.approx(10.0)


def _plan(params: dict) -> Plan:
    return Plan("t", {"dtype": "bf16"}, params, {}, {}, {"vocab_size": 1000})


def test_bytes_of_stored_formats_and_gathered_tables():
    """embed: 3 ids (8 B), 3 of 1000 rows of 64 bf16, 3x64 bf16 out. An FP8 [256, 128]
    weight with 128x128 blocks: 32768 bytes + 2 scales."""
    ids = Ref("input", "ids", (1, 3), "i64", dims=("B", "T"))
    table = Ref("param", "embed.weight", (1000, 64), "bf16")
    out = Ref("arena", "%e", (1, 3, 64), "bf16", dims=("B", "T", 64))
    embed = Launch("kernel", "embed", "embed", "embed", (), {}, (ids, table), (out,))
    plan = _plan({
        "embed.weight": PlanWeight((1000, 64), "bf16", WeightFormat.dense("bf16")),
        "w": PlanWeight((256, 128), "bf16", WeightFormat.fp8((128, 128))),
    })  # fmt: skip
    env = {"B": 1, "T": 3}
    assert cost.launch_bytes(embed, plan, env) == 24 + 3 * 64 * 2 + 3 * 64 * 2
    assert cost.launch_flops(embed, plan, env) == 0
    w = Ref("param", "w", (256, 128), "bf16")
    x = Ref("arena", "%x", (1, 3, 128), "bf16", dims=("B", "T", 128))
    lin = Launch("kernel", "swiglu", "n", "swiglu", (), {}, (x, w), ())
    assert cost.launch_bytes(lin, plan, env) == 3 * 128 * 2 + 256 * 128 + 2
    assert cost.launch_flops(lin, plan, env) == 2 * 3 * 256 * 128


def test_stacked_experts_count_the_routed_ones():
    """8 experts [8, 64, 32] fp4:32, 1 token routed to 2: 2 experts' 64x32 at half a byte
    plus one scale byte per 32 inputs; flops 2 * 2 routed rows * 64 * 32."""
    w = Ref("param", "e.w1", (8, 64, 32), "bf16")
    order = Ref("arena", "%o", (1, 1, 2), "i64", dims=("B", "T", 2))
    launch = Launch("kernel", "grouped_swiglu", "n", "grouped_swiglu", (), {}, (order, w), ())
    plan = _plan({"e.w1": PlanWeight((8, 64, 32), "bf16", WeightFormat.fp4(32), stack=8)})
    env = {"B": 1, "T": 1}
    assert cost.launch_bytes(launch, plan, env) == 2 * 8 + 2 * 64 * 32 * (0.5 + 1 / 32)
    assert cost.launch_flops(launch, plan, env) == 2 * 2 * 64 * 32


def test_the_head_on_the_last_token_counts_its_rows():
    """A prefill of 2 x 1024 tokens whose head multiplies only each sequence's last token
    ([B, 1, D] in): 2 * 2 rows * 1000 * 64 flops, not 2 * 2048 rows; the same weight on
    every token ([B, T, D]) counts them all."""
    w = Ref("param", "head.weight", (1000, 64), "bf16")
    plan = _plan({"head.weight": PlanWeight((1000, 64), "bf16", WeightFormat.dense("bf16"))})
    env = {"B": 2, "T": 1024}
    last = Ref("view", "%last", (2, 1, 64), "bf16", dims=("B", 1, 64))
    head = Launch("kernel", "linear", "head.lm_head_on_last", "linear", (), {}, (last, w), ())
    assert cost.launch_flops(head, plan, env) == 2 * 2 * 1000 * 64
    every = Ref("arena", "%x", (2, 1024, 64), "bf16", dims=("B", "T", 64))
    all_rows = Launch("kernel", "linear", "head.lm_head", "linear", (), {}, (every, w), ())
    assert cost.launch_flops(all_rows, plan, env) == 2 * 2048 * 1000 * 64


SASS = """
        /*0310*/                   LDG.E.128 R4, desc[UR4][R2.64] ;
        /*0320*/                   LDG.E.U8 R9, desc[UR4][R6.64] ;
        /*0330*/                   LDG.E R10, desc[UR4][R6.64+0x4] ;
        /*0340*/                   LDGSTS.E.BYPASS.LTC128B.128 [R102], desc[UR10][R6.64], !P1 ;
        /*0350*/                   LDGDEPBAR ;
        /*0360*/              @!P6 LDG.E.64.STRONG.GPU R2, desc[UR4][R8.64] ;
        /*0400*/                   HMMA.16816.F32.BF16 R12, R4, R8, R12 ;
        /*0410*/                   HGMMA.64x64x16.F32.BF16 R24, gdesc[UR8], R24 ;
"""
PTX = """
    ld.global.v4.b32 { %r1, %r2, %r3, %r4 }, [ %rd1 + 0 ];
    ld.global.b8 { %rs1 }, [ %rd2 + 0 ];
    mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%f1}, {%r1}, {%r2}, {%f2};
    wgmma.mma_async.sync.aligned.m64n64k32.f32.e4m3.e4m3 {%f1}, %rd1, %rd2, 1;
"""


def test_asm_readers():
    assert asm.load_widths_sass(SASS) == {1: 1, 4: 1, 8: 1, 16: 2}  # LDGDEPBAR: no load
    assert asm.mma_kinds_sass(SASS) == {"mma bf16": 1, "wgmma bf16": 1}
    assert asm.load_widths_ptx(PTX) == {1: 1, 16: 1}
    assert asm.mma_kinds_ptx(PTX) == {"mma bf16": 1, "wgmma fp8": 1}
    log = "ptxas info : Used 88 registers, used 1 barriers, 1024 bytes smem\n" \
          "    0 bytes stack frame, 24 bytes spill stores, 40 bytes spill loads"  # fmt: skip
    assert asm.ptxas_facts(log) == {"registers": 88, "spill_bytes": 64, "ptxas_smem": 1024}
    ttir = "%4 = tt.dot %1, %2, %3, inputPrecision = tf32 : tensor<16x64xf32> * ..."
    assert asm.dot_types(ttir) == {"tf32": 1}


def test_target_names():
    assert target("sm90") is target("sm_90") is target("90")
    with pytest.raises(Exception, match="expected one of sm_80, sm_89, sm_90"):
        target("sm_75")
