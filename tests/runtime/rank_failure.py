"""A rank that fails while the other waits for it (tests/runtime/test_distributed.py): a
module without torch, so that its spawned processes start in a moment."""

from __future__ import annotations

import os
import signal
import time

from v4c.errors import CheckpointError, CommError


def failing_rank(folder: str) -> None:
    """Rank 1 cannot read its checkpoint; rank 0 waits for it (as in its first collective)
    until the launcher stops it."""
    if os.environ["RANK"] == "1":
        raise CheckpointError(f"{folder}/missing: no such checkpoint folder")
    time.sleep(120)


def stalling_rank(folder: str) -> None:
    """Rank 1 stalls where SIGTERM does not end it; rank 0 gives up on it as a collective
    does after its timeout (its CommError names its rank)."""
    if os.environ["RANK"] == "1":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        time.sleep(120)
    time.sleep(1)
    raise CommError("rank 0: all_reduce failed: another rank ended or did not answer")
