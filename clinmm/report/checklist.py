"""TRIPOD+AI and CLAIM reporting checklists: where the validation report answers each item.

Item titles are condensed paraphrases; use the published checklists (Collins et al., BMJ 2024 for TRIPOD+AI; Mongan
et al., Radiology: AI 2020 for CLAIM) for the full wording. Every item either links to an anchor (``id``) of a
section the report contains, or says why the report does not answer it (study-level facts only the authors know,
such as funding or ethics approval). A test checks that every anchor exists in the rendered HTML.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ChecklistItem", "TRIPOD_AI", "CLAIM", "SECTION_ANCHORS", "checklists"]

# Section anchors of templates/report.html.j2 (the test checks the rendered HTML for each).
SECTION_ANCHORS: dict[str, str] = {
    "intended-use": "Intended use",
    "model-card": "Model card",
    "data": "Data provenance and splits",
    "flow": "Flow of studies",
    "methods": "Statistical methods",
    "discrimination": "Discrimination and threshold metrics",
    "classification-report": "Classification report",
    "calibration": "Calibration",
    "comparisons": "Fusion comparisons (DeLong)",
    "modality": "Metrics by modality availability",
    "subgroups": "Subgroups",
    "faithfulness": "Explanation faithfulness",
    "failures": "Most confident errors",
    "limitations": "Limitations",
}

_AUTHORS = "Not answered by this generated report: a study-level fact the authors must add ({what})."


@dataclass(frozen=True)
class ChecklistItem:
    """One checklist item.

    Attributes:
        item: item number as in the published checklist (e.g. ``12e``).
        topic: condensed topic.
        anchor: section id answering it, or None.
        reason: why it is not answered here (required when ``anchor`` is None).
    """

    item: str
    topic: str
    anchor: str | None = None
    reason: str = ""


def _na(item: str, topic: str, what: str) -> ChecklistItem:
    return ChecklistItem(item=item, topic=topic, anchor=None, reason=_AUTHORS.format(what=what))


TRIPOD_AI: tuple[ChecklistItem, ...] = (
    _na("1", "Title identifies the study as developing/evaluating a prediction model, target population, outcome",
        "the manuscript title"),
    _na("2", "Abstract", "the manuscript abstract"),
    ChecklistItem("3a", "Healthcare context and rationale", "intended-use"),
    ChecklistItem("3b", "Target population and intended purpose of the model", "intended-use"),
    ChecklistItem("3c", "Known biases and health inequalities", "subgroups"),
    ChecklistItem("4", "Objectives (development and/or evaluation)", "intended-use"),
    ChecklistItem("5a", "Sources of data", "data"),
    _na("5b", "Dates of data collection", "the dates; manifests carry no collection dates"),
    ChecklistItem("6a", "Key elements of the study setting (sites)", "subgroups"),
    ChecklistItem("6b", "Eligibility criteria", "flow"),
    _na("6c", "Treatments received", "clinical context of the cohort"),
    ChecklistItem("7", "Data preparation and quality checking", "flow"),
    ChecklistItem("8a", "Outcome definition (findings, prevalence)", "data"),
    _na("8b", "Blinding of outcome assessment", "how the reference labels were produced"),
    _na("8c", "Outcome assessment consistency", "how consistently the reference labels were assessed"),
    ChecklistItem("9a", "Choice and definition of predictors (image, note)", "model-card"),
    _na("9b", "Predictor assessment blinded to outcome", "whether notes were written blind to the outcome"),
    ChecklistItem("9c", "Predictor measurement differences across settings", "subgroups"),
    ChecklistItem("10", "Sample size", "data"),
    ChecklistItem("11", "Missing data (labels, modalities)", "modality"),
    ChecklistItem("12a", "How data were used (development vs evaluation)", "data"),
    ChecklistItem("12b", "Predictor handling (preprocessing)", "model-card"),
    ChecklistItem("12c", "Model type, building and hyperparameters", "model-card"),
    ChecklistItem("12d", "Heterogeneity across clusters / sites", "subgroups"),
    ChecklistItem("12e", "Performance measures with rationale (discrimination, calibration)", "methods"),
    ChecklistItem("12f", "Model updating / recalibration", "calibration"),
    ChecklistItem("12g", "Outputs and decision thresholds", "discrimination"),
    ChecklistItem("13", "Class imbalance handling", "model-card"),
    ChecklistItem("14", "Fairness approaches", "subgroups"),
    ChecklistItem("15", "Model output and how it is used", "intended-use"),
    ChecklistItem("16", "Differences between development and evaluation data", "data"),
    _na("17", "Ethical approval and consent", "ethics committee approval"),
    _na("18a", "Funding", "sources of funding"),
    _na("18b", "Conflicts of interest", "conflicts of interest"),
    _na("18c", "Protocol", "where the protocol can be accessed"),
    _na("18d", "Registration", "the registration number"),
    _na("18e", "Data sharing", "data availability statement"),
    _na("18f", "Code sharing", "where the analysis code is available"),
    _na("19", "Patient and public involvement", "patient and public involvement"),
    ChecklistItem("20a", "Flow of participants", "flow"),
    ChecklistItem("20b", "Characteristics of participants (and by subgroup)", "subgroups"),
    _na("20c", "Comparison of development and evaluation data",
        "a comparison of the development and evaluation distributions"),
    ChecklistItem("21", "Number of participants and outcome events", "discrimination"),
    ChecklistItem("22", "Full model specification / access", "model-card"),
    ChecklistItem("23a", "Model performance with confidence intervals", "discrimination"),
    ChecklistItem("23b", "Performance in key subgroups", "subgroups"),
    ChecklistItem("24", "Model updating results", "calibration"),
    _na("25", "Interpretation", "the interpretation of these results"),
    ChecklistItem("26", "Limitations", "limitations"),
    ChecklistItem("27a", "Usability in the intended setting, handling of poor-quality or missing inputs", "modality"),
    ChecklistItem("27b", "Users' interaction with the model (explanations)", "faithfulness"),
    _na("27c", "Future research", "the discussion"),
)

CLAIM: tuple[ChecklistItem, ...] = (
    _na("1", "Identification as a study of AI methodology", "the manuscript title"),
    _na("2", "Structured summary", "the manuscript abstract"),
    ChecklistItem("3", "Scientific and clinical background, intended use", "intended-use"),
    ChecklistItem("4", "Study objectives and hypotheses", "intended-use"),
    _na("5", "Prospective or retrospective study", "the study design"),
    ChecklistItem("6", "Study goal", "intended-use"),
    ChecklistItem("7", "Data sources", "data"),
    ChecklistItem("8", "Eligibility criteria", "flow"),
    ChecklistItem("9", "Data pre-processing steps", "model-card"),
    ChecklistItem("10", "Selection of data subsets", "flow"),
    ChecklistItem("11", "Definitions of data elements", "data"),
    ChecklistItem("12", "De-identification methods", "failures"),
    ChecklistItem("13", "Handling of missing data", "modality"),
    _na("14", "Definition of ground truth", "how the reference labels were defined"),
    _na("15", "Rationale for the reference standard", "why this reference standard was chosen"),
    _na("16", "Source of ground-truth annotations and annotator qualifications", "who labelled the data"),
    _na("17", "Annotation tools", "the annotation software"),
    _na("18", "Inter- and intra-rater variability", "annotator agreement"),
    _na("19", "Intended sample size", "the planned sample size and its rationale"),
    ChecklistItem("20", "Assignment of data to partitions", "data"),
    ChecklistItem("21", "Level at which partitions are disjoint (patient)", "data"),
    ChecklistItem("22", "Detailed model description", "model-card"),
    ChecklistItem("23", "Software libraries and packages", "model-card"),
    ChecklistItem("24", "Initialisation of model parameters", "model-card"),
    ChecklistItem("25", "Training approach details", "model-card"),
    ChecklistItem("26", "Method of selecting the final model", "model-card"),
    ChecklistItem("27", "Ensembling techniques", "model-card"),
    ChecklistItem("28", "Metrics of model performance", "methods"),
    ChecklistItem("29", "Statistical measures of significance and uncertainty", "methods"),
    ChecklistItem("30", "Robustness or sensitivity analysis", "modality"),
    ChecklistItem("31", "Methods for explainability or interpretability", "faithfulness"),
    _na("32", "Validation or testing on external data", "whether the evaluated split is external to development"),
    ChecklistItem("33", "Flow of participants or cases", "flow"),
    ChecklistItem("34", "Demographic and clinical characteristics of cases", "subgroups"),
    ChecklistItem("35", "Performance metrics on the evaluated partition (one report per split)", "discrimination"),
    ChecklistItem("36", "Estimates of diagnostic accuracy and their precision", "discrimination"),
    ChecklistItem("37", "Failure analysis of incorrectly classified cases", "failures"),
    ChecklistItem("38", "Study limitations", "limitations"),
    ChecklistItem("39", "Implications for practice", "intended-use"),
    _na("40", "Registration number and registry", "the registration"),
    _na("41", "Where the full study protocol can be accessed", "the protocol"),
    _na("42", "Sources of funding and other support", "funding"),
)


def checklists() -> dict[str, tuple[ChecklistItem, ...]]:
    """The two checklists by name, in report order."""
    return {"TRIPOD+AI": TRIPOD_AI, "CLAIM": CLAIM}
