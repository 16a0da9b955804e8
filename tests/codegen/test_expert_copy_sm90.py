"""The slot-cache copy kernel (codegen/kernels/expert_copy.py) built for sm_90 ahead of time
as `runtime/offload.py` launches it for a Flash layer (FP4 planes of 4 MiB and 256 KiB, 12
slots), in a subprocess without TRITON_INTERPRET: the bytes move in 16-byte global loads
(the addresses made from integers keep the alignment the compiler needs), with no narrower
data loads and no spills."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

SCRIPT = """
import json, torch
from v4c.codegen.aot import compile_facts, recording
from v4c.codegen.kernels.expert_copy import fill_slots
from v4c.codegen.targets import target
from v4c.runtime.offload import BLOCK, CHUNK

source, table = torch.zeros(12, dtype=torch.int32), torch.zeros(6, 3, dtype=torch.int64)
with recording() as seen:
    fill_slots[(12, 6, (4 << 20) // CHUNK)](source, table, CHUNK=CHUNK, BLOCK=BLOCK)
print(json.dumps(compile_facts(seen[0], target("sm_90"))))
"""


def test_copy_kernel_moves_16_byte_words_on_sm90(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path / "triton")
    done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                          text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    facts = json.loads(done.stdout.strip().splitlines()[-1])
    loads = {int(width): n for width, n in facts["loads"].items()}
    # the table's three int64 words and the slot's int32 source are the only narrow loads
    assert loads[16] >= 4 and sum(n for w, n in loads.items() if w < 16) <= 4, loads
    assert facts["spill_bytes"] == 0 and facts["read_from"] == "sass"
