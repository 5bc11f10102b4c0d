"""Preprocessing of a whole cohort into the cache: reading the table, the process pool, the manifest, publishing.

:func:`preprocess_cohort` owns the IO around :func:`~hcc_exp.data.preprocessing.preprocessor.preprocess_and_save`:
it reads ``cohort.csv``, states the cache's size (and refuses it when the disk is too
small), runs the patients in worker processes that die with this one, writes
``labels.csv`` and ``manifest.json`` into a staging folder and renames it into place
only once complete. The cache's bytes depend on the cohort's bytes and the recipe only:
times, durations and machine paths are returned (:class:`~hcc_exp.data.cache.CacheBuild`)
and logged, never written into it.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import shutil
import time
from collections.abc import Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd
import SimpleITK as sitk

from hcc_exp.config import PreprocessConfig
from hcc_exp.data import contract
from hcc_exp.data.cache import (
    CACHE_VERSION,
    LABEL_COLUMNS,
    MANIFEST,
    PATIENTS_DIR,
    CacheBuild,
    PreprocessedCohort,
    publish_cache_folder,
    write_current,
    write_labels,
    write_manifest,
)
from hcc_exp.data.contract import COHORT_CSV
from hcc_exp.data.preprocessing import preprocessor
from hcc_exp.data.preprocessing.cache_size import check_cache_fits, describe_cache_size
from hcc_exp.data.preprocessing.hashing import cache_key, hash_cohort_inputs
from hcc_exp.errors import MissingColumnError, PatientPreprocessError, PreprocessError
from hcc_exp.processes import die_with_parent, sigterm_unwinds
from hcc_exp.progress import patient_progress
from hcc_exp.vocabulary import PATIENT_ID, PHASES, REGIONS

log = logging.getLogger("hcc_exp.data.preprocessing")

STOP_TIMEOUT_SECONDS = 5.0
"""How long stopped workers get to exit on SIGTERM before they are killed."""


def preprocess_cohort(
    cohort_dir: Path | str,
    cache_root: Path | str,
    cfg: PreprocessConfig,
    *,
    phases: Sequence[str] = PHASES,
    progress: bool = True,
    input_hash: str | None = None,
) -> PreprocessedCohort:
    """Preprocess every patient of a cohort into ``CACHE_ROOT/<cache_key>`` (layout: :mod:`hcc_exp.data.cache`).

    A cache with the same parameters and inputs is reused as is (no file is
    rewritten). Otherwise the patients are preprocessed in ``cfg.workers``
    processes (in this process when 1) into ``CACHE_ROOT/.tmp-<key>-<pid>``,
    which is renamed to ``CACHE_ROOT/<key>`` once complete. Either way
    ``CACHE_ROOT/current.json`` then names the key. The cohort is expected to be
    valid (``hcc-exp check``); this function does not validate it. Workers come
    from a fork server (spawn where there is none), so a script calling this with
    ``workers > 1`` needs the ``if __name__ == "__main__":`` guard. They exit with
    this process, also when it is killed; SIGTERM and Ctrl-C stop them and remove
    the staging folder.

    Args:
        input_hash: :func:`hash_cohort_inputs` of ``cohort_dir`` and ``phases`` when the
            caller has just computed it (it reads every byte of the cohort).

    Returns:
        The completed cache, with :attr:`~hcc_exp.data.cache.PreprocessedCohort.build` set.

    Raises:
        PatientPreprocessError: a patient failed (named); no cache folder is left.
        InsufficientDiskSpaceError: the cache would not fit on the disk; nothing is written.
        MissingColumnError: cohort.csv lacks a column the cache keeps (:data:`LABEL_COLUMNS`).
        PreprocessError: cohort.csv is missing, lists no patient or a patient twice.
    """
    started = time.perf_counter()
    cohort_dir = Path(cohort_dir)
    cache_root = Path(cache_root)
    phases = tuple(phases)
    unknown = [p for p in phases if p not in PHASES]
    if not phases or unknown:
        raise PreprocessError(f"phases must be a non-empty subset of {list(PHASES)}, got {list(phases)}")
    cohort_csv = cohort_dir / COHORT_CSV
    table = read_cohort_table(cohort_csv)
    patient_ids = table[PATIENT_ID].tolist()

    input_hash = input_hash or hash_cohort_inputs(cohort_dir, phases)
    key = cache_key(cfg, input_hash)
    final = cache_root / key
    patient_seconds: dict[str, float] = {}
    reused = (final / MANIFEST).is_file()
    expected = 0
    if not reused:
        expected = check_cache_fits(cfg, len(patient_ids), len(phases), cache_root)
        statement = f"cache {final}: {describe_cache_size(cfg, len(patient_ids), len(phases))}"
        log.info("%s", statement)
        patient_seconds = _build(
            cohort_dir, table, cache_root, key, cfg, phases, input_hash, progress=progress, statement=statement
        )
    write_current(cache_root, key)
    build = CacheBuild(
        cohort_dir=str(cohort_dir.resolve()),
        reused=reused,
        seconds=round(time.perf_counter() - started, 3),
        patient_seconds=patient_seconds,
        expected_bytes=expected,
    )
    log.info("cache %s %s from %s in %.1f s", key, "reused" if reused else "written", build.cohort_dir, build.seconds)
    log.debug("per-patient seconds: %s", patient_seconds)
    return replace(PreprocessedCohort.open(final), build=build)


def read_cohort_table(cohort_csv: Path) -> pd.DataFrame:
    """``cohort.csv`` as preprocessing sees it: every value as text, one row per patient.

    The one place preprocessing reads the cohort table, through
    :func:`hcc_exp.data.contract.read_cohort_table`: the normalisation ``check`` validated
    (spaces stripped, canonical case, a patient called ``NA`` stays ``NA``), so ``labels.csv``
    holds exactly what ``check`` accepted.

    Raises:
        PreprocessError: the file is missing, lists no patient or a patient twice.
        MissingColumnError: a column of :data:`LABEL_COLUMNS` is missing.
    """
    if not cohort_csv.is_file():
        raise PreprocessError(f"{cohort_csv} does not exist")
    table = contract.read_cohort_table(cohort_csv)
    missing = [c for c in LABEL_COLUMNS if c not in table.columns]
    if missing:
        raise MissingColumnError(
            f"cohort.csv lacks column(s) {', '.join(missing)} (run `hcc-exp check`)", column=missing[0], path=cohort_csv
        )
    patient_ids = table[PATIENT_ID].tolist()
    if not patient_ids:
        raise PreprocessError(f"{cohort_csv} lists no patient")
    repeated = sorted({pid for pid in patient_ids if patient_ids.count(pid) > 1})
    if repeated:
        raise PreprocessError(f"{cohort_csv} lists patient(s) more than once: {repeated}")
    return table


def _build(
    cohort_dir: Path,
    table: pd.DataFrame,
    cache_root: Path,
    key: str,
    cfg: PreprocessConfig,
    phases: tuple[str, ...],
    input_hash: str,
    *,
    progress: bool,
    statement: str,
) -> dict[str, float]:
    """Write the cache into a staging folder and rename it to ``CACHE_ROOT/<key>``; nothing is left on failure.

    Returns:
        Seconds per patient (for the log; never written into the cache).
    """
    patient_ids = table[PATIENT_ID].tolist()
    cache_root.mkdir(parents=True, exist_ok=True)
    _remove_abandoned_tmp(cache_root, key)
    tmp = cache_root / f".tmp-{key}-{os.getpid()}"
    final = cache_root / key
    with sigterm_unwinds():
        try:
            if tmp.exists():
                shutil.rmtree(tmp)
            (tmp / PATIENTS_DIR).mkdir(parents=True)
            results = _preprocess_patients(cohort_dir, tmp / PATIENTS_DIR, cfg, phases, patient_ids, progress, statement)
            write_labels(table, tmp)
            infos = {pid: results[pid][0] for pid in patient_ids}
            write_manifest(
                {
                    "version": CACHE_VERSION,
                    "cache_key": key,
                    "params": cfg.recipe(),  # not workers: the cache is the same however many built it
                    "params_hash": cfg.params_hash(),
                    "input_hash": input_hash,
                    "phases": list(phases),
                    "regions": list(REGIONS),
                    "shape_zyx": list(cfg.crop_size_vox),
                    "spacing_mm": list(cfg.spacing_mm),
                    "dtype": cfg.dtype,
                    "patients": infos,
                },
                tmp,
            )
            _publish(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return {pid: round(results[pid][1], 3) for pid in patient_ids}


def _publish(tmp: Path, final: Path) -> None:
    # Another run completed the same key meanwhile: keep its copy (the cache's never-replace rule).
    publish_cache_folder(tmp, final)


def _remove_abandoned_tmp(cache_root: Path, key: str) -> None:
    # A killed run leaves .tmp-<key>-<pid>; remove those whose process is gone.
    for folder in cache_root.glob(f".tmp-{key}-*"):
        try:
            os.kill(int(folder.name.rsplit("-", 1)[1]), 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except (ValueError, PermissionError, OSError):
            continue


def _preprocess_patients(
    cohort_dir: Path,
    out_dir: Path,
    cfg: PreprocessConfig,
    phases: tuple[str, ...],
    patient_ids: list[str],
    progress: bool,
    statement: str,
) -> dict[str, tuple[dict[str, Any], float]]:
    workers = min(cfg.workers, len(patient_ids))
    results: dict[str, tuple[dict[str, Any], float]] = {}
    with patient_progress("preprocessing", enabled=progress) as bar:
        if progress:
            bar.console.print(statement, markup=False, highlight=False)
        task = bar.add_task("", total=len(patient_ids))
        if workers <= 1:
            for pid in patient_ids:
                results[pid] = preprocessor.preprocess_and_save(cohort_dir, pid, out_dir, cfg, phases)
                bar.update(task, advance=1, description=pid)
            return results
        threads = max(1, (os.cpu_count() or 1) // workers)
        pool = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=_worker_context(),
            initializer=_init_worker,
            initargs=(threads, os.getpid()),
        )
        try:
            pending: dict[Future, str] = {
                pool.submit(preprocessor.preprocess_and_save, cohort_dir, pid, out_dir, cfg, phases): pid
                for pid in patient_ids
            }
            while pending:
                done, _ = wait(pending, return_when=FIRST_EXCEPTION)
                for future in done:
                    pid = pending.pop(future)
                    error = future.exception()
                    if error is not None:
                        _raise_for(pid, error)
                    results[pid] = future.result()
                    bar.update(task, advance=1, description=pid)
        except BaseException:
            _stop_workers(pool)
            raise
        pool.shutdown(wait=True)
    return results


def _raise_for(pid: str, error: BaseException) -> None:
    if isinstance(error, PatientPreprocessError):
        raise error
    hint = (
        " (a worker process died; a script calling preprocess_cohort with workers > 1"
        " needs an `if __name__ == '__main__':` guard)"
        if isinstance(error, BrokenProcessPool)
        else ""
    )
    raise PatientPreprocessError(pid, f"worker failed: {type(error).__name__}: {error}{hint}") from error


def _stop_workers(pool: ProcessPoolExecutor) -> None:
    """Stop the pool's processes now (queued patients are dropped), so none writes into the staging folder."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        if process.is_alive():
            process.terminate()
    deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            process.kill()
            process.join(1.0)


def _worker_context() -> mp.context.BaseContext:
    # Never fork the caller (torch / OpenMP threads may be running there). A fork
    # server is a fresh interpreter that imports the worker module once and forks the
    # workers from itself, so they start in milliseconds instead of re-importing
    # SimpleITK, scipy and pandas each; where there is none, spawn.
    if "forkserver" in mp.get_all_start_methods():
        context = mp.get_context("forkserver")
        context.set_forkserver_preload([__name__])
        return context
    return mp.get_context("spawn")


def _init_worker(threads: int, owner_pid: int) -> None:
    die_with_parent(owner_pid)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
