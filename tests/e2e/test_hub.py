"""`--checkpoint OWNER/NAME`: a Hugging Face Hub repo id, resolved offline from a local
Hugging Face cache laid out as the hub lays it (models--owner--name/refs/main naming a
snapshot folder whose files link into blobs/), and one clear error when neither the Hub
nor the cache has it."""

from __future__ import annotations

import os

import pytest

from v4c.cli import main

SHA = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def hub(tmp_path, tiny, monkeypatch):
    """A hub cache holding the tiny checkpoint as repo v4c-test/tiny, offline."""
    from huggingface_hub import constants

    root = tmp_path / "hub"
    repo = root / "models--v4c-test--tiny"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(SHA)
    (repo / "blobs").mkdir()
    snapshot = repo / "snapshots" / SHA
    snapshot.mkdir(parents=True)
    for i, file in enumerate(sorted(tiny.iterdir())):
        blob = repo / "blobs" / f"blob{i}"
        os.symlink(file, blob)
        os.symlink(os.path.relpath(blob, snapshot), snapshot / file.name)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(root))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return snapshot


def test_a_repo_id_runs_from_the_local_cache_offline(hub, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no folder named v4c-test/tiny here
    for model in (["--checkpoint", "v4c-test/tiny"], ["v4c-test/tiny"]):  # or MODEL first
        with pytest.raises(SystemExit) as done:
            main(["run", *model, "--prompt", "Hi", "--max-new-tokens", "2", "--threads", "1",
                  "--speculative", "off"])  # fmt: skip
        err = capsys.readouterr().err
        assert done.value.code in (0, None), err
        assert f" from {hub}\n" in err  # the snapshot folder
        assert "2 new (length)" in err
    with pytest.raises(SystemExit) as done:
        main(["run", "--checkpoint", "v4c-test/none", "--prompt", "Hi"])
    err = capsys.readouterr().err
    assert done.value.code == 2 and "Traceback" not in err
    assert "--checkpoint v4c-test/none: not a folder here, not downloadable from the " in err
    assert f"not in the local Hugging Face cache ({hub.parents[2]})" in err
