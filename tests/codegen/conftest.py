"""Shared by the kernel tests: one torch thread (the interpreter runs tiny tensors, where a
second thread only adds overhead on a shared 2-core machine) and running one kernel."""

from __future__ import annotations

import pytest
import torch

from v4c.codegen import jit
from v4c.codegen.params import describe


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def run_kernel(op, ins, root, params=None):
    """The kernel of `op`'s template on `ins` (rendered, cached under `root`, imported)."""
    params = params or jit.params_for(op.kind, op.attrs(), [describe(t) for t in ins])
    return jit.load(params, root).run(*ins)
