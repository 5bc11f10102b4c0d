"""Benchmark 4: 1,000-resample bootstrap CI of Harrell's C-index, vectorised vs a loop of scikit-survival calls.

* vectorised: :func:`hcc_exp.evaluation.concordance.bootstrap_c_index` (pair matrices
  computed once, every resample as two batched quadratic forms).
* loop: ``sksurv.metrics.concordance_index_censored`` once per resample, on the SAME
  resample indices (``result.resample_indices``), then the same percentile interval.

Data: 400 patients with exponential event times driven by a latent score, uniform
censoring, and a risk score rounded to 0.1 (so that tied risks occur), as in
``tests/evaluation/test_bootstrap_benchmark.py``. Both CIs are printed and stored with the
largest per-resample difference.

    python benchmarks/bench_bootstrap.py [--patients 400] [--resamples 1000] [--repeats 3]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from benchmarks.common import (
    Target,
    base_parser,
    interleaved,
    ratio,
    report_result,
    setup_process,
)

NAME = "bootstrap"
TARGET = Target(50.0, ">= 50x, equal CIs on the same resamples")
EQUAL_ATOL = 1e-9
"""Per-resample C-indices of the two methods must agree to this (they compute the same sums)."""


def survival_data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(time_days, event, risk)`` of ``n`` patients (see the module docstring)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    event_time = np.round(rng.exponential(365 * np.exp(-x)))
    censor_time = np.round(rng.uniform(30, 1500, n))
    time_days = np.minimum(event_time, censor_time)
    event = event_time <= censor_time
    risk = np.round(x, 1)  # tied risks
    return time_days, event, risk


def percentile_interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    valid = values[np.isfinite(values)]
    alpha = 1.0 - confidence
    low, high = np.quantile(valid, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = base_parser(__doc__.splitlines()[0], repeats=3)
    parser.add_argument("--patients", type=int, default=400, help="patients (default 400)")
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples (default 1000)")
    parser.add_argument("--seed", type=int, default=11, help="data seed (default 11); resamples use seed 0")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    setup_process(args.threads)

    from sksurv.metrics import concordance_index_censored

    from hcc_exp.evaluation.concordance import bootstrap_c_index, bootstrap_indices

    time_days, event, risk = survival_data(args.patients, args.seed)
    indices = bootstrap_indices(args.patients, args.resamples, np.random.default_rng(0))
    outputs: dict[str, Any] = {}

    def vectorised() -> None:
        outputs["vectorised"] = bootstrap_c_index(time_days, event, risk, indices=indices)

    def loop() -> None:
        estimates = np.array(
            [concordance_index_censored(event[i], time_days[i], risk[i])[0] for i in indices], dtype=float
        )
        outputs["loop"] = (estimates, percentile_interval(estimates, 0.95))

    # The loop has nothing to warm up (and takes seconds); the vectorised call gets one untimed run.
    timings = interleaved(
        {"vectorised": vectorised, "sksurv_loop": loop}, args.repeats, warmup={"vectorised": 1, "sksurv_loop": 0}
    )
    result = outputs["vectorised"]
    loop_estimates, (loop_low, loop_high) = outputs["loop"]
    max_diff = float(np.nanmax(np.abs(result.resample_estimates - loop_estimates)))
    full = float(concordance_index_censored(event, time_days, risk)[0])
    equal = (
        max_diff <= EQUAL_ATOL
        and abs(result.ci_low - loop_low) <= EQUAL_ATOL
        and abs(result.ci_high - loop_high) <= EQUAL_ATOL
        and abs(result.estimate - full) <= EQUAL_ATOL
    )
    speedup = ratio(timings["sksurv_loop"], timings["vectorised"])
    headline = speedup["of_medians"]
    print(
        f"C-index {result.estimate:.4f}; 95% CI vectorised [{result.ci_low:.6f}, {result.ci_high:.6f}], "
        f"sksurv loop [{loop_low:.6f}, {loop_high:.6f}]; largest per-resample difference {max_diff:.2e}"
    )
    notes = []
    if not equal:
        notes.append(f"CIs differ: largest per-resample difference {max_diff:.3g}")
    if not TARGET.met(headline):
        notes.append(f"speed target missed: {headline:.1f}x")
    return report_result(
        NAME,
        title="Bootstrap C-index CI",
        compares="vectorised bootstrap_c_index vs loop of sksurv concordance_index_censored (same resamples)",
        ratio_label="loop time / vectorised time",
        ratio_value=headline,
        ratio_text=f"{headline:.0f}x, CIs equal" if equal else f"{headline:.0f}x, CIs differ",
        target=TARGET,
        target_met=bool(TARGET.met(headline) and equal),
        sizes={
            "patients": args.patients,
            "resamples": args.resamples,
            "events": int(event.sum()),
            "distinct_risks": int(np.unique(risk).size),
            "threads": args.threads,
            "repeats": args.repeats,
        },
        timings={"vectorised": timings["vectorised"].to_dict(), "sksurv_loop": timings["sksurv_loop"].to_dict()},
        results={
            "speedup": speedup,
            "c_index": result.estimate,
            "c_index_sksurv": full,
            "ci_vectorised": [result.ci_low, result.ci_high],
            "ci_sksurv_loop": [loop_low, loop_high],
            "valid_resamples": result.n_valid,
            "max_abs_diff_per_resample": max_diff,
            "cis_equal": equal,
            "equal_tolerance": EQUAL_ATOL,
        },
        notes=notes,
        started=started,
    )


if __name__ == "__main__":
    main()
