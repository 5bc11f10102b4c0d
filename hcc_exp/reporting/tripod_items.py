"""The TRIPOD+AI checklist: its items in order (number, section, topic, requirement in brief).

Source: Collins GS, Moons KGM, Dhiman P, et al. TRIPOD+AI statement: updated guidance for reporting
clinical prediction models that use regression or machine learning methods. BMJ 2024;385:e078378,
Table 1 (27 items, with sub-items; https://www.tripod-statement.org). The requirements are
paraphrased in a line each; the checklist's own wording is the reference.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Item:
    """One TRIPOD+AI checklist item."""

    number: str
    section: str
    topic: str
    requirement: str


ITEMS: tuple[Item, ...] = (
    Item("1", "Title", "Title", "Identify the study as developing or evaluating a prediction model, the target population and the outcome."),
    Item("2", "Abstract", "Abstract", "See TRIPOD+AI for Abstracts."),
    Item("3a", "Introduction", "Background", "Healthcare context and rationale; existing models."),
    Item("3b", "Introduction", "Background", "Target population and intended purpose in the care pathway; intended users."),
    Item("3c", "Introduction", "Background", "Known health inequalities between sociodemographic groups."),
    Item("4", "Introduction", "Objectives", "Study objectives, incl. development and/or evaluation."),
    Item("5a", "Methods", "Data", "Sources of data; representativeness."),
    Item("5b", "Methods", "Data", "Dates of the collected data (accrual, end of follow-up)."),
    Item("6a", "Methods", "Participants", "Study setting, number and location of centres."),
    Item("6b", "Methods", "Participants", "Eligibility criteria."),
    Item("6c", "Methods", "Participants", "Details of any treatments received."),
    Item("7", "Methods", "Data preparation", "Data pre-processing and quality checking, consistent across groups."),
    Item("8a", "Methods", "Outcome", "Outcome definition, how and when assessed."),
    Item("8b", "Methods", "Outcome", "Qualifications and demographics of outcome assessors."),
    Item("8c", "Methods", "Outcome", "Blinding of outcome assessment."),
    Item("9a", "Methods", "Predictors", "Choice of initial predictors and any pre-selection."),
    Item("9b", "Methods", "Predictors", "Definition of all predictors, how and when measured."),
    Item("9c", "Methods", "Predictors", "Qualifications of predictor assessors; blinding; annotation agreement."),
    Item("10", "Methods", "Sample size", "How the study size was arrived at; events per parameter."),
    Item("11", "Methods", "Missing data", "How missing data were handled."),
    Item("12a", "Methods", "Analytical methods", "How the data were used (development, evaluation, resampling)."),
    Item("12b", "Methods", "Analytical methods", "How predictors were handled (transformation, standardisation)."),
    Item("12c", "Methods", "Analytical methods", "Model type, building steps, hyperparameter tuning, internal validation."),
    Item("12d", "Methods", "Analytical methods", "Heterogeneity in estimates and performance across clusters (centres)."),
    Item("12e", "Methods", "Analytical methods", "Performance measures and model comparison."),
    Item("12f", "Methods", "Analytical methods", "Any model updating (recalibration)."),
    Item("12g", "Methods", "Analytical methods", "For evaluation, how the predictions were calculated."),
    Item("13", "Methods", "Class imbalance", "Methods for class imbalance, if used."),
    Item("14", "Methods", "Fairness", "Approaches to address model fairness."),
    Item("15", "Methods", "Model output", "Model output and any thresholds."),
    Item("16", "Methods", "Training vs evaluation", "Differences between development and evaluation data."),
    Item("17", "Methods", "Ethical approval", "Ethics committee approval and consent."),
    Item("18a", "Open science", "Funding", "Sources of funding and role of funders."),
    Item("18b", "Open science", "Conflicts of interest", "Conflicts of interest and financial disclosures."),
    Item("18c", "Open science", "Protocol", "Where the study protocol can be accessed."),
    Item("18d", "Open science", "Registration", "Study registration."),
    Item("18e", "Open science", "Data sharing", "Availability of the data."),
    Item("18f", "Open science", "Code sharing", "Availability of the analytical code."),
    Item("19", "Patient and public involvement", "PPI", "Patient and public involvement."),
    Item("20a", "Results", "Participants", "Flow of participants; numbers with and without the outcome; follow-up."),
    Item("20b", "Results", "Participants", "Characteristics overall and per data source (Table 1)."),
    Item("20c", "Results", "Participants", "For evaluation, comparison with the development data."),
    Item("21", "Results", "Model development", "Participants and outcome events in each analysis."),
    Item("22", "Results", "Model specification", "Details of the full model to allow predictions; access to it."),
    Item("23a", "Results", "Model performance", "Performance with confidence intervals, incl. key subgroups."),
    Item("23b", "Results", "Model performance", "Heterogeneity of performance across clusters."),
    Item("24", "Results", "Model updating", "Results of any model updating."),
    Item("25", "Discussion", "Interpretation", "Overall interpretation, incl. fairness."),
    Item("26", "Discussion", "Limitations", "Limitations (non-representative sample, sample size, overfitting, missing data)."),
    Item("27a", "Discussion", "Usability", "How poor-quality or unavailable input data should be handled."),
    Item("27b", "Discussion", "Usability", "Required user interaction and expertise."),
    Item("27c", "Discussion", "Usability", "Future research and generalisability."),
)
