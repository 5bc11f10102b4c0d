"""Where a run came from: git commit and dirty flag, DVC data version (no network)."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path
from typing import Any

import yaml

from hcc_exp.errors import ConfigError

DATA_DVC = "data.dvc"


def _git(repo: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=20, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def git_state(repo: Path) -> dict[str, Any]:
    """``{"commit": sha | None, "dirty": bool | None}`` of the working tree at ``repo``.

    ``commit`` is None outside a repository or before the first commit; ``dirty``
    is None when git cannot tell (not a repository, git missing) and counts
    untracked files as dirty, since they can change a run.
    """
    head = _git(repo, "rev-parse", "--verify", "-q", "HEAD")
    status = _git(repo, "status", "--porcelain")
    return {
        "commit": head.strip() if head else None,
        "dirty": None if status is None else bool(status.strip()),
    }


def data_version(repo: Path) -> str | None:
    """The md5 recorded in ``<repo>/data.dvc`` (outs), or None when the file is absent.

    With several outs the md5s are combined (md5 of ``path:md5`` lines, sorted).

    Raises:
        ConfigError: ``data.dvc`` exists but is not a DVC file with an md5 per out.
    """
    path = Path(repo) / DATA_DVC
    if not path.is_file():
        return None
    try:
        content = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    outs = content.get("outs") if isinstance(content, dict) else None
    if not isinstance(outs, list) or not outs:
        raise ConfigError(f"{path}: no 'outs' list (is it a DVC file?)")
    pairs = []
    for out in outs:
        if not isinstance(out, dict) or not out.get("md5"):
            raise ConfigError(f"{path}: an entry of 'outs' has no md5: {out!r}")
        pairs.append((str(out.get("path", "")), str(out["md5"])))
    if len(pairs) == 1:
        return pairs[0][1]
    lines = "\n".join(f"{p}:{m}" for p, m in sorted(pairs))
    return hashlib.md5(lines.encode()).hexdigest()


def provenance_tags(repo: Path, *, cache_key: str | None = None) -> list[str]:
    """Tags for a tracked run: ``git:<sha7>``, ``dirty``/``clean``, ``data:<md5[:8]>``, ``cache:<key>``."""
    git = git_state(repo)
    tags = []
    if git["commit"]:
        tags.append(f"git:{git['commit'][:7]}")
    if git["dirty"] is not None:
        tags.append("dirty" if git["dirty"] else "clean")
    version = data_version(repo)
    if version:
        tags.append(f"data:{version[:8]}")
    if cache_key:
        tags.append(f"cache:{cache_key}")
    return tags
