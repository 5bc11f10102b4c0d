"""States of a sweep's Slurm array tasks (``hcc-exp sweep-status``): sacct, else scontrol.

No submitit here, so reading a sweep's status needs only the Slurm client commands.
"""

from __future__ import annotations

import shutil
import subprocess


def _run(argv: list[str]) -> str | None:
    if shutil.which(argv[0]) is None:
        return None
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def job_states(job_ids: list[str]) -> dict[str, str]:
    """State of every array task of ``job_ids`` (``"123_0" -> "RUNNING"``) from sacct, else scontrol.

    sacct needs Slurm's accounting database; without it ``scontrol show job`` knows jobs
    for ``MinJobAge`` seconds after they end. Jobs neither knows are left out.
    """
    if not job_ids:
        return {}
    states: dict[str, str] = {}
    out = _run(["sacct", "-n", "-P", "-X", "-j", ",".join(job_ids), "--format=JobID,State"])
    for line in (out or "").splitlines():
        parts = line.split("|")
        if len(parts) >= 2 and parts[0]:
            states[parts[0]] = parts[1].split()[0]
    if states:
        return states
    for job_id in job_ids:
        out = _run(["scontrol", "-o", "show", "job", job_id])
        for line in (out or "").splitlines():
            fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
            task = fields.get("ArrayTaskId")
            key = f"{fields.get('ArrayJobId', fields.get('JobId'))}_{task}" if task else fields.get("JobId", "")
            if key and "JobState" in fields:
                states[key] = fields["JobState"]
    return states
