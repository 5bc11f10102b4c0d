"""Weights & Biases tracking on top of the local record (the only module family that imports wandb).

Offline by default: runs are written as ``<dir>/wandb/offline-run-*`` folders that
need no account and no network, and are uploaded later with :func:`sync_offline_runs`
(``hcc-exp sync``). Online only when the config asks for it and credentials exist.
"""

from __future__ import annotations

import logging
import netrc
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

import pandas as pd

from hcc_exp.tracking.base import Tracker, TrackingError, safe_name, scalar_metrics

logger = logging.getLogger(__name__)

WandbMode = Literal["offline", "online", "disabled"]
DEFAULT_HOST = "https://api.wandb.ai"
MAX_TAG_LEN = 64  # W&B refuses longer tags


# --------------------------------------------------------------------------- credentials / mode
def wandb_host() -> str:
    """The W&B server host (``WANDB_BASE_URL``, else api.wandb.ai)."""
    return urlparse(os.environ.get("WANDB_BASE_URL", DEFAULT_HOST)).hostname or "api.wandb.ai"


def wandb_credentials_available() -> bool:
    """Whether an API key is configured (``WANDB_API_KEY``, an identity token, or a netrc entry).

    Reads only environment and files: no network, so a revoked key still counts.
    """
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    candidates = [os.environ["NETRC"]] if os.environ.get("NETRC") else [
        os.path.expanduser("~/.netrc"),
        os.path.expanduser("~/_netrc"),
    ]
    host = wandb_host()
    for path in candidates:
        if not os.path.isfile(path):
            continue
        try:
            auth = netrc.netrc(path).authenticators(host)
        except (netrc.NetrcParseError, OSError):
            continue
        if auth and auth[2]:
            return True
    return False


def resolve_wandb_mode(configured: WandbMode) -> WandbMode:
    """The mode a run really uses.

    ``WANDB_MODE=offline|disabled`` in the environment wins (tests, CI, air-gapped
    machines); ``online`` without credentials falls back to ``offline`` with a warning
    so a training run never stops for a missing login.
    """
    env = os.environ.get("WANDB_MODE", "").strip().lower()
    if env == "disabled":
        return "disabled"
    if env in {"offline", "dryrun"}:
        return "offline" if configured != "disabled" else "disabled"
    if configured == "online" and not wandb_credentials_available():
        logger.warning("W&B mode 'online' but no credentials found (wandb login); logging offline instead")
        return "offline"
    return configured


# --------------------------------------------------------------------------- tracker
class WandbTracker(Tracker):
    """Local record plus a W&B run.

    The W&B run gets the flat dotted config (so group-by and parallel-coordinates work
    on ``optim.lr`` etc.), ``group`` (the sweep name), ``job_type`` and tags; per-epoch
    metrics against ``epoch``; the summary = the final ``metrics.json``; images as
    ``wandb.Image``; the best checkpoint as a ``model`` artifact (logged by hand, so it
    works offline); tables as ``wandb.Table``.

    Args:
        project: W&B project.
        mode: ``offline`` (default) or ``online`` (see :func:`resolve_wandb_mode`).
        wandb_dir: folder that receives ``wandb/`` (default: the run folder; a sweep
            passes its own folder so all its runs sit in ``<sweep>/wandb``).
        entity: W&B entity (team or user); None = the account default.
        adopt_active_run: use the process's active W&B run instead of starting one
            (a ``wandb.agent`` function has already called ``wandb.init``).
        group, job_type, tags: defaults, see :class:`Tracker`.
    """

    def __init__(
        self,
        *,
        project: str = "hcc-exp",
        mode: WandbMode = "offline",
        wandb_dir: Path | None = None,
        entity: str | None = None,
        adopt_active_run: bool = False,
        group: str | None = None,
        job_type: str | None = None,
        tags: Sequence[str] = (),
    ) -> None:
        super().__init__(group=group, job_type=job_type, tags=tags)
        self.project = project
        self.mode: WandbMode = mode
        self.wandb_dir = None if wandb_dir is None else Path(wandb_dir)
        self.entity = entity
        self.adopt_active_run = adopt_active_run
        self._run: Any = None

    @property
    def wandb_run(self) -> Any:
        """The underlying ``wandb.Run`` (None before start / after finish)."""
        return self._run

    def start(
        self,
        *,
        run_id: str,
        run_dir: Path,
        config: Mapping[str, Any],
        group: str | None = None,
        job_type: str = "train",
        tags: Sequence[str] = (),
    ) -> None:
        super().start(run_id=run_id, run_dir=run_dir, config=config, group=group, job_type=job_type, tags=tags)
        import wandb

        mode = resolve_wandb_mode(self.mode)
        if self.adopt_active_run and wandb.run is not None:
            self._run = wandb.run
            self._run.config.update(self.config, allow_val_change=True)
        else:
            root = self.wandb_dir if self.wandb_dir is not None else Path(run_dir)
            root.mkdir(parents=True, exist_ok=True)
            try:
                self._run = wandb.init(
                    project=self.project,
                    entity=self.entity,
                    mode="disabled" if mode == "disabled" else mode,
                    dir=str(root),
                    # Unique per project: run folder names repeat across sweeps.
                    id=f"{safe_name(run_id, 48)}-{secrets.token_hex(4)}",
                    name=run_id,
                    group=self.group,
                    job_type=self.job_type,
                    tags=[t[:MAX_TAG_LEN] for t in self.tags],
                    config=self.config,
                    reinit="create_new",
                    settings=wandb.Settings(
                        silent=True,
                        console="off",  # the run folder has its own logs
                        x_disable_stats=True,  # no sampling thread on shared CPUs
                        disable_git=True,  # commit and dirty flag come as tags
                        save_code=False,
                    ),
                )
            except Exception as exc:  # wandb raises many types (UsageError, CommError, ...)
                super().finish(exit_code=1)
                raise TrackingError(
                    f"W&B could not start run {run_id} in mode {mode}: {exc}. "
                    "Set tracking.wandb_mode=offline (or tracking.wandb=false) to train without W&B."
                ) from exc
        self._run.define_metric("epoch")
        self._run.define_metric("*", step_metric="epoch", step_sync=True)

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        super().log_metrics(metrics, step)
        values: dict[str, Any] = scalar_metrics(metrics)
        if step is not None:
            values["epoch"] = step
        self._run.log(values)

    def log_images(self, images: Mapping[str, Path], step: int | None = None) -> None:
        super().log_images(images, step)
        import wandb

        payload: dict[str, Any] = {name: wandb.Image(str(path)) for name, path in images.items()}
        if step is not None:
            payload["epoch"] = step
        self._run.log(payload)

    def log_summary(self, metrics: Mapping[str, Any]) -> None:
        super().log_summary(metrics)
        self._run.summary.update(scalar_metrics(metrics))

    def log_checkpoint(self, path: Path, *, name: str, metadata: Mapping[str, Any]) -> None:
        super().log_checkpoint(path, name=name, metadata=metadata)
        import wandb

        artifact = wandb.Artifact(safe_name(name), type="model", metadata=dict(metadata))
        # immutable: no staging copy of a large checkpoint; best.ckpt is final once training ends.
        artifact.add_file(str(path), name=Path(path).name, policy="immutable")
        self._run.log_artifact(artifact, aliases=["best"])

    def log_table(self, name: str, frame: pd.DataFrame) -> None:
        super().log_table(name, frame)
        import wandb

        self._run.log({name: wandb.Table(dataframe=frame)})

    def finish(self, exit_code: int = 0) -> None:
        if not self.active:
            return
        run, self._run = self._run, None
        try:
            if run is not None:
                log_file = getattr(run.settings, "sync_file", None)
                run.finish(exit_code=int(exit_code))
                if log_file and not self.adopt_active_run:
                    _wait_for_exit_record(Path(log_file))
        finally:
            super().finish(exit_code)


def _wait_for_exit_record(log_file: Path, timeout_s: float = 30.0) -> None:
    """Block until the run's ``.wandb`` file holds its exit record.

    ``Run.finish`` (wandb 0.31) can return before wandb-core has flushed the
    transaction log; a sweep that reads or syncs the run right after would see a
    truncated file.
    """
    from hcc_exp.tracking.offline import read_offline_run

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if log_file.is_file():
            try:
                if read_offline_run(log_file.parent).exit_code is not None:
                    return
            except Exception:  # noqa: BLE001 - a half-written record (TrackingError, DecodeError): retry
                pass
        time.sleep(0.05)
    logger.warning("W&B run file %s has no exit record after %.0f s; it may be incomplete", log_file, timeout_s)


# --------------------------------------------------------------------------- sync
def find_offline_runs(folder: Path) -> list[Path]:
    """Offline W&B run folders (``offline-run-*`` holding a ``.wandb`` file) under ``folder``."""
    return sorted(
        p for p in Path(folder).rglob("offline-run-*") if p.is_dir() and any(p.glob("*.wandb"))
    )


def _wandb_command() -> list[str]:
    exe = Path(sys.executable).parent / "wandb"
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "wandb"]


def sync_offline_runs(folder: Path) -> list[Path]:
    """Upload every offline W&B run under ``folder`` with ``wandb sync``.

    Returns:
        The run folders synced (empty when there are none).

    Raises:
        TrackingError: ``folder`` does not exist, no W&B credentials are configured,
            or ``wandb sync`` fails (its output is included).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise TrackingError(f"folder {folder} does not exist")
    runs = find_offline_runs(folder)
    if not runs:
        return []
    if not wandb_credentials_available():
        raise TrackingError(
            f"cannot sync {len(runs)} offline W&B run(s) under {folder}: not logged in to W&B "
            f"(no WANDB_API_KEY and no netrc entry for {wandb_host()}). Run `wandb login` once you are "
            "online, then sync again; the offline runs stay where they are."
        )
    env = dict(os.environ, WANDB_MODE="online")
    done = subprocess.run(
        [*_wandb_command(), "sync", *[str(r) for r in runs]], capture_output=True, text=True, env=env, check=False
    )
    if done.returncode != 0:
        tail = (done.stdout + done.stderr).strip()[-2000:]
        raise TrackingError(f"`wandb sync` failed for runs under {folder} (exit {done.returncode}):\n{tail}")
    return runs


# --------------------------------------------------------------------------- W&B sweeps
def wandb_server_unavailable(configured: WandbMode) -> str | None:
    """Why W&B's server-side features (sweeps) cannot be used now, or None when they can.

    Checks only local state (mode and credentials); no network.
    """
    env = os.environ.get("WANDB_MODE", "").strip().lower()
    if env in {"offline", "dryrun", "disabled"}:
        return f"WANDB_MODE={env} is set in the environment"
    if configured != "online":
        return f"tracking.wandb_mode is '{configured}' (W&B sweeps need 'online')"
    if not wandb_credentials_available():
        return f"no W&B API key (WANDB_API_KEY or `wandb login` for {wandb_host()})"
    return None


def run_wandb_agent(
    sweep_config: Mapping[str, Any],
    function: Any,
    *,
    project: str,
    entity: str | None = None,
    count: int | None = None,
    sweep_id: str | None = None,
) -> str:
    """Register ``sweep_config`` on the W&B server (unless ``sweep_id`` is given) and run an agent here.

    ``function(config: dict)`` runs one trial; it is called inside the agent's run
    (a :class:`WandbTracker` with ``adopt_active_run=True`` logs into it).

    Returns:
        The sweep id (``entity/project/id`` form accepted by ``wandb agent``).

    Raises:
        TrackingError: W&B refused the sweep (server unreachable, bad key).
    """
    import wandb

    try:
        if sweep_id is None:
            sweep_id = wandb.sweep(dict(sweep_config), project=project, entity=entity)

        def _trial() -> None:
            run = wandb.init(settings=wandb.Settings(silent=True, console="off", x_disable_stats=True))
            try:
                function(dict(run.config))
            finally:
                if wandb.run is run:
                    run.finish()

        wandb.agent(sweep_id, function=_trial, project=project, entity=entity, count=count)
    except wandb.Error as exc:
        raise TrackingError(f"W&B sweep failed: {exc}") from exc
    return sweep_id
