"""The TRIPOD+AI checklist: its items in order (number, section, topic, applicability, requirement in brief).

Source: Collins GS, Moons KGM, Dhiman P, et al. TRIPOD+AI statement: updated guidance for reporting
clinical prediction models that use regression or machine learning methods. BMJ 2024;385:e078378,
Table 1 (27 main items, 52 checklist items with the sub-items; https://www.tripod-statement.org).
Numbers, sections, topics and the development / evaluation applicability are the checklist's; the
requirements are condensed to a line each, so the checklist's own wording stays the reference.

Applicability as in the checklist: ``"D"`` development studies only, ``"E"`` evaluation studies
only, ``"D;E"`` both.
"""

from __future__ import annotations

from dataclasses import dataclass

SECTIONS: tuple[str, ...] = (
    "Title",
    "Abstract",
    "Introduction",
    "Methods",
    "Open science",
    "Patient and public involvement",
    "Results",
    "Discussion",
)
"""The checklist's sections, in order."""


@dataclass(frozen=True)
class Item:
    """One TRIPOD+AI checklist item."""

    number: str
    section: str
    topic: str
    applies: str
    requirement: str


_USABILITY = "Usability of the model in the context of current care"

ITEMS: tuple[Item, ...] = (
    Item("1", "Title", "Title", "D;E", "Identify the study as developing or evaluating the performance of a multivariable prediction model, the target population and the outcome predicted."),
    Item("2", "Abstract", "Abstract", "D;E", "See the TRIPOD+AI for Abstracts checklist."),
    Item("3a", "Introduction", "Background", "D;E", "Healthcare context (diagnostic or prognostic) and rationale for developing or evaluating the model, with references to existing models."),
    Item("3b", "Introduction", "Background", "D;E", "Target population and intended purpose of the model in the care pathway, including its intended users."),
    Item("3c", "Introduction", "Background", "D;E", "Any known health inequalities between sociodemographic groups."),
    Item("4", "Introduction", "Objectives", "D;E", "Study objectives, including whether the study develops or validates a prediction model (or both)."),
    Item("5a", "Methods", "Data", "D;E", "Sources of data, separately for development and evaluation data; rationale for using them and their representativeness."),
    Item("5b", "Methods", "Data", "D;E", "Dates of the collected data: start and end of participant accrual and, if applicable, end of follow-up."),
    Item("6a", "Methods", "Participants", "D;E", "Key elements of the study setting, including the number and location of centres."),
    Item("6b", "Methods", "Participants", "D;E", "Eligibility criteria for study participants."),
    Item("6c", "Methods", "Participants", "D;E", "Details of any treatments received and how they were handled in development or evaluation, if relevant."),
    Item("7", "Methods", "Data preparation", "D;E", "Data pre-processing and quality checking, including whether these were similar across relevant sociodemographic groups."),
    Item("8a", "Methods", "Outcome", "D;E", "Definition of the outcome and its time horizon, how and when assessed, the rationale for it, and whether its assessment is consistent across sociodemographic groups."),
    Item("8b", "Methods", "Outcome", "D;E", "If outcome assessment needs subjective interpretation: qualifications and demographic characteristics of the outcome assessors."),
    Item("8c", "Methods", "Outcome", "D;E", "Any actions to blind assessment of the outcome to be predicted."),
    Item("9a", "Methods", "Predictors", "D", "Choice of initial predictors and any pre-selection of predictors before model building."),
    Item("9b", "Methods", "Predictors", "D;E", "Definition of all predictors, how and when measured (and any blinding of predictor assessment to the outcome and other predictors)."),
    Item("9c", "Methods", "Predictors", "D;E", "If predictor measurement needs subjective interpretation: qualifications and demographic characteristics of the predictor assessors."),
    Item("10", "Methods", "Sample size", "D;E", "How the study size was arrived at (separately for development and evaluation) and why it suffices; any sample size calculation."),
    Item("11", "Methods", "Missing data", "D;E", "How missing data were handled; reasons for omitting any data."),
    Item("12a", "Methods", "Analytical methods", "D", "How the data were used in the analysis (development, evaluation of performance), including any partitioning, considering sample size requirements."),
    Item("12b", "Methods", "Analytical methods", "D", "How predictors were handled in the analyses (functional form, rescaling, transformation, standardisation)."),
    Item("12c", "Methods", "Analytical methods", "D", "Type of model, rationale, all model-building steps including hyperparameter tuning, and the method of internal validation."),
    Item("12d", "Methods", "Analytical methods", "D;E", "If and how heterogeneity in model parameter estimates and performance across clusters (e.g. hospitals, countries) was handled and quantified."),
    Item("12e", "Methods", "Analytical methods", "D;E", "All measures and plots used to evaluate performance (discrimination, calibration, clinical utility) and their rationale; comparison of models if relevant."),
    Item("12f", "Methods", "Analytical methods", "E", "Any model updating (e.g. recalibration) arising from the evaluation, overall or for particular groups or settings."),
    Item("12g", "Methods", "Analytical methods", "E", "For model evaluation, how the model predictions were calculated (formula, code, object, API)."),
    Item("13", "Methods", "Class imbalance", "D;E", "If class imbalance methods were used: why and how, and any later recalibration of the model or its predictions."),
    Item("14", "Methods", "Fairness", "D;E", "Any approaches used to address model fairness and their rationale."),
    Item("15", "Methods", "Model output", "D", "The model's output (probabilities, classification); details and rationale of any classification and how thresholds were identified."),
    Item("16", "Methods", "Training versus evaluation", "D;E", "Differences between development and evaluation data in healthcare setting, eligibility criteria, outcome and predictors."),
    Item("17", "Methods", "Ethical approval", "D;E", "The ethics committee that approved the study, and participant informed consent or its waiver."),
    Item("18a", "Open science", "Funding", "D;E", "Sources of funding and the role of the funders."),
    Item("18b", "Open science", "Conflicts of interest", "D;E", "Conflicts of interest and financial disclosures of all authors."),
    Item("18c", "Open science", "Protocol", "D;E", "Where the study protocol can be accessed, or that none was prepared."),
    Item("18d", "Open science", "Registration", "D;E", "Registration (register name and number), or that the study was not registered."),
    Item("18e", "Open science", "Data sharing", "D;E", "Availability of the study data."),
    Item("18f", "Open science", "Code sharing", "D;E", "Availability of the analytical code."),
    Item("19", "Patient and public involvement", "Patient and public involvement", "D;E", "Any patient and public involvement in design, conduct, reporting, interpretation or dissemination, or that there was none."),
    Item("20a", "Results", "Participants", "D;E", "Flow of participants, numbers with and without the outcome and, if applicable, a summary of follow-up time."),
    Item("20b", "Results", "Participants", "D;E", "Characteristics overall and per data source or setting (dates, key predictors, treatments, sample size, events, follow-up, missing data); differences across key demographic groups."),
    Item("20c", "Results", "Participants", "E", "For model evaluation, the distribution of important predictors compared with the development data."),
    Item("21", "Results", "Model development", "D;E", "Number of participants and outcome events in each analysis (development, hyperparameter tuning, evaluation)."),
    Item("22", "Results", "Model specification", "D", "Details of the full model (formula, code, object, API) to allow predictions in new individuals and third-party evaluation; any restrictions to access or re-use."),
    Item("23a", "Results", "Model performance", "D;E", "Performance estimates with confidence intervals, including for key subgroups; plots to aid presentation."),
    Item("23b", "Results", "Model performance", "D;E", "If examined, heterogeneity of model performance across clusters."),
    Item("24", "Results", "Model updating", "E", "Results of any model updating, including the updated model and its performance."),
    Item("25", "Discussion", "Interpretation", "D;E", "Overall interpretation of the main results, including fairness, in the context of the objectives and previous studies."),
    Item("26", "Discussion", "Limitations", "D;E", "Limitations (non-representative sample, sample size, overfitting, missing data) and their effects on bias, uncertainty and generalisability."),
    Item("27a", "Discussion", _USABILITY, "D", "How poor-quality or unavailable input data should be assessed and handled when the model is implemented."),
    Item("27b", "Discussion", _USABILITY, "D", "Whether users must interact in handling the input data or using the model, and the expertise required."),
    Item("27c", "Discussion", _USABILITY, "D;E", "Next steps for future research, with a view to applicability and generalisability of the model."),
)  # fmt: skip
