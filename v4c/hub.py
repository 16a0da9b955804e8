"""`--checkpoint` given as a Hugging Face Hub repo id (`deepseek-ai/DeepSeek-V4-Flash`):
the folder `huggingface_hub` gives for it, downloaded when the Hub can be reached, else
from the local Hugging Face cache (as `HF_HUB_OFFLINE=1` asks), else one error naming both.

Only what a checkpoint folder holds is fetched: config.json, the safetensors shards and
their index, tokenizer.json. A path that exists, or that does not look like `owner/name`,
is a folder path and is left to the folder checks.
"""

from __future__ import annotations

import re
from pathlib import Path

from v4c.errors import V4CError

REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
FILES = ["config.json", "*.safetensors", "model.safetensors.index.json", "tokenizer.json"]


def is_repo_id(name: str | Path) -> bool:
    text = str(name)
    return REPO_ID.fullmatch(text) is not None and not Path(text).expanduser().exists()


def resolve_checkpoint(name: str | Path, log=lambda _: None) -> Path:
    """The checkpoint folder `name` names: itself, or the snapshot of a Hub repo id."""
    if not is_repo_id(name):
        return Path(name).expanduser()
    try:  # installed with tokenizers, which v4c needs; said plainly if it is not
        from huggingface_hub import constants, snapshot_download
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError
    except ImportError:
        raise V4CError(
            f"--checkpoint {name}: no such folder, and a Hub repo id needs huggingface_hub: "
            "pip install huggingface_hub"
        ) from None

    log(f"{name}: no such folder here; fetching the Hugging Face Hub repo (or its cached copy)")
    try:
        return Path(snapshot_download(str(name), allow_patterns=FILES))
    except (LocalEntryNotFoundError, HfHubHTTPError, ValueError, OSError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise V4CError(
            f"--checkpoint {name}: not a folder here, not downloadable from the Hugging Face "
            f"Hub ({first}), and not in the local Hugging Face cache ({constants.HF_HUB_CACHE}); "
            "give a checkpoint folder, or a repo id the Hub or the cache has"
        ) from None
