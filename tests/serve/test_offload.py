"""`v4c serve --device-gb N`: the session a server opens with a budget compiles the plan
with most experts in the host store, and serves the same greedy replies, streamed and
whole, as the all-resident server; a budget below the minimum is refused before serving,
naming the budget that fits; a compiled plan keeps its own budget."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.serve.scripted import serving
from v4c.budget import GiB, minimum_bytes, routed_experts
from v4c.cli.setup import open_cli_session
from v4c.compile import compile_spec
from v4c.errors import V4CError
from v4c.passes.base import CompileOptions
from v4c.session import open_session
from v4c.spec import load_spec

CHAT = [{"role": "user", "content": "Name three colours."}]
LIMITS = dict(max_batch=2, max_tokens=64)  # as `v4c serve --max-batch 2 --prefill-chunk 64`


def _session(device_gb: float | None = None):
    return open_cli_session(None, None, "cpu", None, "torch", 128, 1, **LIMITS,
                            device_gb=device_gb)[0]  # fmt: skip


def _replies(engine, tok) -> list[str]:
    with serving(engine, tok, name="tiny", prefill_chunk=64) as server:
        whole = server.client.chat.completions.create(
            model="tiny", messages=CHAT, max_tokens=6, temperature=0
        )
        chunks = server.client.chat.completions.create(
            model="tiny", messages=CHAT, max_tokens=6, temperature=0, stream=True
        )
        streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return [whole.choices[0].message.content, streamed]


def test_served_replies_with_a_budget_equal_the_all_resident_ones(tok):
    resident = _session()
    plan, top_k = resident.engine.plan, resident.spec.moe.top_k
    size = max(b for _, b in routed_experts(plan).values())
    budget = (minimum_bytes(plan, top_k) + 3 * size) / GiB  # room for 3 resident experts
    offloaded = _session(budget)
    stores = offloaded.engine.offload
    assert stores and sum(s.held for s in stores.values()) == 3
    want = _replies(resident.engine, tok)
    assert _replies(offloaded.engine, tok) == want and want[0]
    assert sum(int(s.counts[1]) for s in stores.values()) > 0  # picks read from host memory


def test_a_plan_keeps_its_budget():
    plan = compile_spec(load_spec("tiny"), CompileOptions(max_seq=128)).plan
    with pytest.raises(V4CError, match="keeps the budget it was compiled with"):
        open_session(plan=plan, device_gb=1.0, progress=False)


def test_a_budget_below_the_minimum_is_refused_with_one_that_fits():
    args = ["serve", "--port", "0", "--max-seq", "128", "--threads", "1", "--device-gb", "0.001"]
    done = subprocess.run([sys.executable, "-m", "v4c", *args], capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode != 0 and "Traceback" not in done.stderr
    found = re.search(r"needs at least ([\d.]+) GiB.*pass --device-gb ([\d.]+)", done.stderr)
    assert found, done.stderr
    assert 0.001 < float(found[1]) <= float(found[2])
