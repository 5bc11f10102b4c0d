"""git commit / dirty flag and the DVC data version, on real temporary repositories."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from hcc_exp.errors import ConfigError
from hcc_exp.tracking import data_version, git_state, provenance_tags

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.org", *args],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def test_git_state_tracks_commit_and_dirty_flag(tmp_path: Path) -> None:
    assert git_state(tmp_path) == {"commit": None, "dirty": None}  # not a repository
    _git(tmp_path, "init", "-q")
    assert git_state(tmp_path) == {"commit": None, "dirty": False}  # no commit yet
    (tmp_path / "a.txt").write_text("1")
    _git(tmp_path, "add", "a.txt")
    _git(tmp_path, "commit", "-q", "-m", "first")
    head = _git(tmp_path, "rev-parse", "HEAD")
    assert git_state(tmp_path) == {"commit": head, "dirty": False}
    (tmp_path / "a.txt").write_text("2")
    assert git_state(tmp_path) == {"commit": head, "dirty": True}


def test_data_version_reads_dvc_md5(tmp_path: Path) -> None:
    assert data_version(tmp_path) is None
    (tmp_path / "data.dvc").write_text(
        "outs:\n- md5: 3f2a9c0e5b7d4e1f8a6b2c9d0e1f2a3b.dir\n  size: 1234\n  nfiles: 10\n  path: raw\n"
    )
    assert data_version(tmp_path) == "3f2a9c0e5b7d4e1f8a6b2c9d0e1f2a3b.dir"
    assert "data:3f2a9c0e" in provenance_tags(tmp_path, cache_key="abc-def")
    assert "cache:abc-def" in provenance_tags(tmp_path, cache_key="abc-def")
    (tmp_path / "data.dvc").write_text("outs:\n- path: raw\n")
    with pytest.raises(ConfigError, match=r"data.dvc: an entry of 'outs' has no md5"):
        data_version(tmp_path)
