"""What each TRIPOD+AI item says about a run: one filler per item, from the run's records.

A filler returns the item's blocks, or None when the run holds nothing for it (the report then
marks the item open); text the authors must still supply carries :data:`OPEN`.
:data:`FILLERS` maps item numbers of :data:`hcc_exp.reporting.tripod_items.ITEMS` to fillers.
"""

from __future__ import annotations

import json
import platform
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from hcc_exp.reporting import document as doc
from hcc_exp.reporting.tripod_records import RunRecords
from hcc_exp.vocabulary import ENDPOINTS, SPLIT_TITLES, SPLITS, event_column

OPEN = "To be completed by the authors."
FIGURES = (
    ("km_os.png", "Kaplan-Meier curves of high- vs low-risk groups (OS)"),
    ("km_rfs.png", "Kaplan-Meier curves of high- vs low-risk groups (RFS)"),
    ("roc_os.png", "Time-dependent ROC (OS)"),
    ("roc_mvi.png", "ROC of MVI"),
    ("calibration_os.png", "Calibration (OS)"),
    ("reliability_mvi.png", "Reliability diagram (MVI)"),
    ("dca_os.png", "Decision curves (OS)"),
    ("dca_mvi.png", "Decision curves (MVI)"),
)

Filler = Callable[[RunRecords], list[doc.Block] | None]


def _frame_table(frame: pd.DataFrame, max_rows: int = 60) -> doc.Table:
    frame = frame.head(max_rows)
    return doc.Table(
        tuple(str(c) for c in frame.columns),
        tuple(tuple("" if pd.isna(v) else (f"{v:.4g}" if isinstance(v, float) else str(v)) for v in row) for row in frame.itertuples(index=False)),
    )


def _split_counts(r: RunRecords) -> pd.DataFrame | None:
    if r.labels is None:
        return None
    rows = []
    for split in SPLITS:
        part = r.labels[r.labels["split"] == split]
        row = {"Cohort": SPLIT_TITLES[split], "Patients": len(part)}
        if "institution" in part:
            row["Centres"] = ", ".join(sorted(part["institution"].astype(str).unique()))
        for endpoint in ENDPOINTS:
            row[f"{endpoint.upper()} events"] = int(part[event_column(endpoint)].sum())
        row["MVI present"] = int(part["mvi"].sum()) if "mvi" in part else ""
        rows.append(row)
    return pd.DataFrame(rows)


def _objectives(r: RunRecords):
    splits = [SPLIT_TITLES[s] for s in SPLITS if r.labels is not None and (r.labels["split"] == s).any()]
    return [doc.Paragraph(
        "Development of a multi-task deep-learning model on triphasic contrast-enhanced CT predicting overall "
        "survival and recurrence-free survival (two Cox heads) and microvascular invasion (MVI), with evaluation "
        f"on: {', '.join(splits) or 'see the data'}.")]  # fmt: skip


def _data_sources(r: RunRecords):
    counts = _split_counts(r)
    if counts is None:
        return None
    synthetic = r.meta.get("cohort_dir") and (Path(r.meta["cohort_dir"]) / "oracle.csv").is_file()
    text = (f"Cohort folder {Path(str(r.meta.get('cohort_dir', '?'))).name} (data version {r.meta.get('data_version')}, "
            f"preprocessed cache {r.meta.get('cache_key')}).")  # fmt: skip
    if synthetic:
        text += " This is the embedded synthetic cohort with a known generative model (oracle), not patient data."
    return [doc.Paragraph(text), _frame_table(counts)]


def _setting(r: RunRecords):
    counts = _split_counts(r)
    if counts is None or "Centres" not in counts:
        return None
    n = r.labels["institution"].nunique()
    return [doc.Paragraph(f"{n} centres; per cohort: " + "; ".join(f"{c}: {s}" for c, s in zip(counts["Cohort"], counts["Centres"], strict=True))
                          + ". Care setting and locations: " + OPEN)]  # fmt: skip


def _eligibility(r: RunRecords):
    if r.labels is None:
        return None
    n_cache = len(r.labels)
    n_pred = len(r.predictions) if r.predictions is not None else 0
    return [doc.Paragraph(f"{n_cache} patients passed the cohort validation (`hcc-exp check`: complete phases, binary masks "
                          f"on the image grids, consistent outcomes) and preprocessing; {n_pred} have predictions. "
                          "Clinical inclusion / exclusion criteria: " + OPEN)]  # fmt: skip


def _preprocessing(r: RunRecords):
    pre = r.config.get("preprocess", {})
    if not pre:
        return None
    return [doc.BulletList(tuple(f"{k}: {v}" for k, v in pre.items())),
            doc.Paragraph("The same preprocessing applies to every cohort (one cache key per parameter set and input hash).")]  # fmt: skip


def _outcome(r: RunRecords):
    return [doc.BulletList((
        "OS: days from surgery to death (os_time_days, os_event); censored at last follow-up.",
        "RFS: days from surgery to recurrence or death, whichever first (rfs_time_days <= os_time_days).",
        "MVI: microvascular invasion on histopathology (0/1).",
        "How and when assessed: " + OPEN,
    ))]  # fmt: skip


def _predictors(r: RunRecords):
    return [doc.Paragraph(f"Imaging only: CT phases {', '.join(r.config.get('phases', []))}; ROI strategy "
                          f"'{r.config.get('roi')}' (background liver, peritumoral margin of "
                          f"{r.config.get('preprocess', {}).get('margin_mm')} mm, tumour). Clinical factors (BCLC, AFP) enter "
                          "only the baseline and combined models.")]  # fmt: skip


def _annotation(r: RunRecords):
    if r.agreement is None:
        return None
    return [doc.Paragraph("Segmentation agreement of two annotations (Dice, HD95 in mm):"), _frame_table(r.agreement.round(3)),
            doc.Paragraph("Annotators' qualifications and blinding: " + OPEN)]  # fmt: skip


def _sample_size(r: RunRecords):
    counts = _split_counts(r)
    if counts is None:
        return None
    blocks: list[doc.Block] = [_frame_table(counts)]
    if r.n_parameters:
        train = counts.iloc[0]
        epp = ", ".join(f"{e.upper()} {train[f'{e.upper()} events'] / r.n_parameters:.2e}" for e in ENDPOINTS)
        blocks.append(doc.Paragraph(f"Model parameters: {r.n_parameters:,}; training events per parameter: {epp}. "
                                    "Justification of the study size: " + OPEN))  # fmt: skip
    return blocks


def _missing(r: RunRecords):
    if r.labels is None:
        return None
    columns = [c for c in ("age", "sex", "afp_ng_ml", "tumour_size_mm", "bclc", "tnm", "mvi") if c in r.labels]
    rows = [(c, str(int(r.labels[c].isna().sum()))) for c in columns]
    return [doc.Table(("Variable", "Missing"), tuple(rows)),
            doc.Paragraph("Images and outcomes are complete by validation. Combined Cox model: complete cases; radiomics "
                          "features: training-split median imputation.")]  # fmt: skip


def _data_use(r: RunRecords):
    t = r.config.get("trainer", {})
    return [doc.Paragraph(
        f"Training split fits the model (max {t.get('max_epochs')} epochs, early stopping after {t.get('patience')} epochs "
        f"without improvement of the validation loss on the internal split); best epoch {r.meta.get('best_epoch')}. "
        "Thresholds, risk cut-offs and Breslow baselines are fitted on the training split and applied unchanged; "
        "confidence intervals by patient bootstrap.")]  # fmt: skip


def _predictor_handling(r: RunRecords):
    a = r.config.get("augment", {})
    return [doc.Paragraph(f"Intensities clipped at percentiles {r.config.get('preprocess', {}).get('clip_percentiles')} and "
                          f"scaled to [0, 1]; augmentation: rotation {a.get('rotation')} (+-{a.get('rotation_range_deg')} deg), "
                          f"time jitter +-{a.get('time_jitter_days')} days, {r.config.get('augment_copies')} copies per sample.")]  # fmt: skip


def _model(r: RunRecords):
    m, loss, opt = r.config.get("model", {}), r.config.get("loss", {}), r.config.get("optim", {})
    items = [f"Model: preset {m.get('preset')}, {m.get('dims')}, pooling {m.get('pooling')}; parameters {r.n_parameters or 'n/a'}",
             f"Loss weighting {loss.get('weighting')} (T = {loss.get('dwa_temperature')}); momentum memory bank {r.config.get('momentum', {})}",
             f"Optimiser: lr {opt.get('lr')}, weight decay {opt.get('weight_decay')}; seed {r.config.get('seed')}"]  # fmt: skip
    blocks: list[doc.Block] = [doc.BulletList(tuple(items))]
    if r.sweep_spec:
        spec = r.sweep_spec
        blocks.append(doc.Paragraph(
            f"Tuning (sweep '{spec.get('name')}'): backend {spec.get('backend', 'optuna')}, method {spec.get('method')}, "
            f"objective {spec.get('metric', {})}, seeds {spec.get('seeds')}, budget {spec.get('n_trials', spec.get('run_cap', 'per arm'))}; "
            f"search space / arms: {json.dumps(spec.get('parameters', spec.get('arms', {})), default=str)[:800]}"))  # fmt: skip
    else:
        blocks.append(doc.Paragraph("No hyperparameter sweep recorded for this run (not inside a sweep folder)."))
    return blocks


def _clusters(r: RunRecords):
    sub = r.table("subgroups")
    if sub is None or sub.empty:
        return None
    inst = sub[sub["variable"] == "institution"]
    return [doc.Paragraph("C-index by centre (bootstrap 95% CI):"), _frame_table(inst)]


def _measures(r: RunRecords):
    return [doc.Paragraph("Harrell's C-index with patient-bootstrap 95% CI, time-dependent AUC, high- vs low-risk hazard "
                          "ratio and log-rank test (median training risk cut), calibration (risk groups; Crowson intercept "
                          "and slope), Brier and integrated Brier scores, decision curves; MVI: AUC, F1, accuracy, sensitivity, "
                          "specificity at the training Youden threshold. Baselines (BCLC, TNM, AFP, size; radiomics; clinical "
                          "and combined Cox) by paired bootstrap of the C-index / AUC difference.")]  # fmt: skip


def _no_updating(_r: RunRecords):
    return [doc.Paragraph("No model updating or recalibration was performed; evaluation cohorts are scored with the training fit.")]


def _prediction_calc(r: RunRecords):
    return [doc.Paragraph("Each evaluation patient's volumes are preprocessed with the training parameters; the network "
                          "gives OS / RFS log-hazards and an MVI probability; S(t | x) = exp(-H0(t) exp(x)) with the training "
                          "Breslow H0; risk group by the training median risk.")]  # fmt: skip


def _imbalance(r: RunRecords):
    counts = _split_counts(r)
    if counts is None:
        return None
    prevalence = "; ".join(f"{c}: {m}/{n}" for c, m, n in zip(counts["Cohort"], counts["MVI present"], counts["Patients"], strict=True))
    return [doc.Paragraph(f"MVI prevalence {prevalence}. No resampling or class weighting; the threshold is the training Youden point.")]


def _fairness(r: RunRecords):
    sub = r.table("subgroups")
    if sub is None or sub.empty:
        return None
    return [doc.Paragraph("C-index by sex and BCLC stage (not estimable cells carry the reason):"),
            _frame_table(sub[sub["variable"].isin(["sex", "bclc"])]), doc.Paragraph("Fairness discussion: " + OPEN)]  # fmt: skip


def _output(r: RunRecords):
    threshold = r.metric("train/mvi/threshold")
    return [doc.Paragraph(f"Outputs: OS and RFS log relative hazards, risk group (high / low), survival at "
                          f"{r.config.get('evaluation', {}).get('horizons_days')} days, MVI probability; MVI threshold "
                          f"(training Youden) {threshold or 'n/a'}.")]  # fmt: skip


def _table1(r: RunRecords):
    if r.table1 is None:
        return None
    return [_frame_table(r.table1.assign(**{c: r.table1[c].map(lambda p: "" if pd.isna(p) else (f"{p:.3f}" if p >= 0.001 else "< 0.001"))
                                            for c in ("p_train_vs_internal", "p_train_vs_external", "p_overall")}))]  # fmt: skip


def _code(r: RunRecords):
    import hcc_exp

    dirty = " (uncommitted changes)" if r.meta.get("git_dirty") else ""
    return [doc.BulletList((f"hcc-exp {r.meta.get('hcc_exp_version', hcc_exp.__version__)}, commit {r.meta.get('git_commit')}{dirty}",
                            f"Environment: Python {sys.version.split()[0]}, {platform.platform()}",
                            "Availability (repository, licence): " + OPEN))]  # fmt: skip


def _data_sharing(r: RunRecords):
    if not r.meta.get("data_version"):
        return None
    return [doc.Paragraph(f"Data version (DVC) {r.meta.get('data_version')}, input hash {r.meta.get('input_hash')}. Access: " + OPEN)]


def _flow(r: RunRecords):
    blocks = _sample_size(r)
    if blocks is None:
        return None
    follow = r.table1[r.table1["variable"].str.startswith("Median follow-up")] if r.table1 is not None else None
    if follow is not None and len(follow):
        row = follow.iloc[0]
        blocks.append(doc.Paragraph("Median follow-up (reverse KM, days): " + ", ".join(f"{SPLIT_TITLES[s]} {row[s]}" for s in SPLITS)))
    return blocks[:1] + blocks[2:]


def _performance(r: RunRecords):
    blocks: list[doc.Block] = []
    for name, title in (("table_b_survival", "C-index, td-AUC and hazard ratio"), ("table_a_mvi", "MVI classification"),
                        ("table_4_baselines", "Clinical baselines (univariate)"),
                        ("table_3b_survival_baselines", "Radiomics, clinical and combined Cox models"),
                        ("table_3a_mvi_baselines", "Radiomics baseline for MVI"),
                        ("calibration_brier", "Calibration slope / intercept and Brier scores")):  # fmt: skip
        frame = r.table(name)
        if frame is not None and not frame.empty:
            blocks += [doc.Paragraph(f"{title}:"), _frame_table(frame)]
    figures = r.evaluation / "figures"
    for file, caption in FIGURES:
        if (figures / file).is_file():
            blocks.append(doc.Image(figures / file, caption))
    return blocks or None


def _full_model(r: RunRecords):
    ckpt = r.run_dir / "checkpoints" / "best.ckpt"
    blocks: list[doc.Block] = [doc.Paragraph(
        f"Network weights: checkpoints/best.ckpt ({'present' if ckpt.is_file() else 'absent'}; "
        f"{r.n_parameters or 'n/a'} parameters); risk cut-offs and Breslow baselines: checkpoints/risk_model.json; "
        "predictions for new patients: `hcc-exp predict`.")]  # fmt: skip
    combined = r.table("combined_model")
    if combined is not None and not combined.empty:
        blocks += [doc.Paragraph("Combined Cox model (training split):"), _frame_table(combined)]
    return blocks


def _cam(r: RunRecords):
    path = r.run_dir / "cam" / "regions_summary.csv"
    if not path.is_file():
        return None
    frame = pd.read_csv(path)
    return [doc.Paragraph("Grad-CAM activation shares per region (supports the interpretation):"), _frame_table(frame, 30),
            doc.Paragraph("Interpretation: " + OPEN)]  # fmt: skip


def _usability(_r: RunRecords):
    return [doc.Paragraph("Inputs are validated before use: `hcc-exp check` / `predict` refuse missing phases, non-binary or "
                          "misaligned masks and inconsistent outcomes with a named error (patient, file, column). "
                          "Clinical handling of unusable scans: " + OPEN)]  # fmt: skip


FILLERS: dict[str, Filler] = {
    "4": _objectives, "5a": _data_sources, "6a": _setting, "6b": _eligibility, "7": _preprocessing, "8a": _outcome,
    "9a": _predictors, "9b": _preprocessing, "9c": _annotation, "10": _sample_size, "11": _missing, "12a": _data_use,
    "12b": _predictor_handling, "12c": _model, "12d": _clusters, "12e": _measures, "12f": _no_updating,
    "12g": _prediction_calc, "13": _imbalance, "14": _fairness, "15": _output, "16": _table1, "18e": _data_sharing,
    "18f": _code, "20a": _flow, "20b": _table1, "20c": _table1, "21": _sample_size, "22": _full_model,
    "23a": _performance, "23b": _clusters, "24": _no_updating, "25": _cam, "27a": _usability,
}  # fmt: skip
