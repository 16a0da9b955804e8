"""A rank that fails while the other waits for it (tests/runtime/test_distributed.py): a
module without torch, so that its spawned processes start in a moment."""

from __future__ import annotations

import os
import time

from v4c.errors import CheckpointError


def failing_rank(folder: str) -> None:
    """Rank 1 cannot read its checkpoint; rank 0 waits for it (as in its first collective)
    until the launcher stops it."""
    if os.environ["RANK"] == "1":
        raise CheckpointError(f"{folder}/missing: no such checkpoint folder")
    time.sleep(120)
