"""Synthetic clinical notes with affirmed, negated and uncertain mentions, and the character span of each mention.

Three disjoint phrase pools, one per split: ``"train"``, ``"val"`` and ``"test"``. No mention phrasing of one pool
occurs in another, so a text model is validated and evaluated on wording it never saw; the test pool mixes new
contexts of the common words ("fever", "breath") with synonyms that never occur in training or validation
("febrile", "pyrexia", "dyspnoeic", "air hunger"), and the validation pool does the same with synonyms of its own
("normothermic", "winded", "laboured breathing", "gasping for air"). Validation notes written with the training pool
(``val_wording="training"``, generator version 4 and earlier) select models that learnt the training templates;
with unseen wording the validation split measures what the test split measures. Notes never mention the image
findings' truth: an indication such as "evaluate for pneumonia" is drawn independently of every label.

In a template, ``[...]`` marks the evidence span and ``{t}``, ``{f}``, ``{d}`` are filled with a temperature in °C,
in °F and a number of days.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

__all__ = [
    "NOTE_LABELS",
    "POLARITIES",
    "PHRASES",
    "Mention",
    "SyntheticNote",
    "render_note",
    "phrase_pool_for_split",
    "ValWording",
]

# Validation notes in wording of their own ("unseen") or in the training wording ("training").
ValWording = Literal["unseen", "training"]

NOTE_LABELS: tuple[str, ...] = ("fever", "dyspnea")
POLARITIES: tuple[str, ...] = ("affirmed", "negated", "uncertain")

# PHRASES[pool][label][polarity] -> sentence templates with one [span].
PHRASES: dict[str, dict[str, dict[str, tuple[str, ...]]]] = {
    "train": {
        "fever": {
            "affirmed": (
                "Patient [reports fever] for the last {d} days.",
                "[Fever] since {d} days, treated with paracetamol at home.",
                "Presents with [fever and chills].",
                "[Temperature {t} C] on arrival.",
                "Wife states he has been [feverish] since {d} days.",
                "[Fever of {t}] this morning.",
                "Ongoing [fevers] despite antipyretics.",
                "[Recorded temperature of {t} degrees] in the ambulance.",
                "Complains of [fever] and malaise.",
                "[Persistent fever] noted by the GP.",
            ),
            "negated": (
                "[No fever].",
                "Patient [denies fever] or chills.",
                "[Afebrile] on arrival.",
                "[Temperature normal] at {n} C.",
                "No chills, [no fevers] reported.",
                "[Fever: denied].",
                "[No documented fever] in the last {d} days.",
                "Remains [afebrile] on the ward.",
                "[Never feverish] during this illness.",
                "[Fever absent] on admission.",
            ),
            "uncertain": (
                "[Possible fever] overnight, not measured.",
                "[?fever] per family.",
                "[Cannot exclude low-grade fever].",
                "[Subjective fever], unconfirmed.",
                "Reports feeling warm, [fever uncertain].",
                "[Query fever] at the nursing home.",
            ),
        },
        "dyspnea": {
            "affirmed": (
                "Complains of [shortness of breath].",
                "[Short of breath] on minimal exertion.",
                "[Dyspnea on exertion] for {d} days.",
                "Increasing [breathlessness] over the past week.",
                "[Dyspnea] at rest this morning.",
                "Patient is [breathless] walking to the bathroom.",
                "New [shortness of breath] since {d} days.",
                "[Progressive dyspnea] noted by the family.",
                "Reports [difficulty breathing] when lying flat.",
            ),
            "negated": (
                "[Denies shortness of breath].",
                "[No dyspnea].",
                "[Breathing comfortably] on room air.",
                "No cough, [no shortness of breath].",
                "[Not breathless] at rest or on exertion.",
                "[Dyspnea: denied].",
                "Chest pain, palpitations and [dyspnea all denied].",
                "[Never short of breath], even on stairs.",
                "[Without breathlessness] at rest.",
                "[Shortness of breath absent].",
            ),
            "uncertain": (
                "[Possible dyspnea], patient unsure.",
                "[?SOB] per triage note.",
                "[Cannot rule out exertional dyspnea].",
                "[Mild breathlessness, uncertain] significance.",
                "Family mentions [maybe short of breath] at night.",
            ),
        },
    },
    "val": {
        "fever": {
            "affirmed": (
                "[Burning up at {t}] in clinic.",
                "[Feels hot and shivery] since {d} days.",
                "[Fevers on and off] for {d} days.",
                "[Elevated temperature of {t}] recorded by the nurse.",
                "[Spiked a temperature] this afternoon.",
                "[Temp {t}] at triage.",
                "[Hot to the touch with a temperature of {t}].",
                "[Ongoing temperatures] at home.",
                "Daughter reports [a high temperature] since {d} days.",
            ),
            "negated": (
                "[Temperature within normal limits].",
                "[No temperatures] at home.",
                "[Not hot or shivery].",
                "[Normothermic] on admission.",
                "[Denies any temperatures].",
                "[Temp {n}, no fever].",
                "[Fever ruled out] by the GP.",
                "[Fever: none].",
            ),
            "uncertain": (
                "[Possibly a temperature] last night.",
                "[Felt hot, not measured].",
                "[Fever unclear] from the history.",
                "[Might have had a temperature] at the weekend.",
                "[Uncertain fever history].",
            ),
        },
        "dyspnea": {
            "affirmed": (
                "[Breathing hard] on arrival.",
                "[Winded after one flight of stairs].",
                "[Laboured breathing] noted by the paramedics.",
                "[Out of breath] doing housework.",
                "[Breathing difficulty] since {d} days.",
                "[Gasping for air] at times.",
                "[Short-winded] with exertion.",
                "[Exertional breathlessness] for {d} days.",
                "[Tachypnoeic and breathless] on the ward.",
            ),
            "negated": (
                "[Breathing normally].",
                "[No difficulty breathing].",
                "[Denies breathlessness].",
                "[Not out of breath] on walking.",
                "[Respiratory effort normal].",
                "[No laboured breathing].",
                "[Dyspnea: none].",
                "[Comfortable at rest, no breathlessness].",
            ),
            "uncertain": (
                "[Possibly out of breath] at night.",
                "[Breathing difficulty not confirmed].",
                "[Unsure whether breathless].",
                "[Might be winded] on stairs.",
                "[Doubtful history of breathlessness].",
            ),
        },
    },
    "test": {
        "fever": {
            "affirmed": (
                "[Febrile] to {t} overnight.",
                "[Fever spiking to {t}] overnight.",
                "[Pyrexia] noted on the observation chart.",
                "[High fevers at night] for {d} days.",
                "[Temperature up to {t} C] on the ward.",
                "[Fever with rigors] since yesterday.",
                "[T max {f} F] in the last 24 hours.",
                "[Has had a fever] every evening this week.",
                "[Running a temperature of {t}] per the carer.",
                "[Feverish and sweaty] at night.",
            ),
            "negated": (
                "[Apyrexial] throughout.",
                "[Without any fever].",
                "[Has not been febrile].",
                "[Temperature never above {n}].",
                "[Fever free] for {d} days.",
                "[No recorded fever] at triage.",
                "[Free of fevers and chills].",
                "[Not feverish] today.",
            ),
            "uncertain": (
                "[Perhaps febrile] at home, no thermometer.",
                "[Questionable fever], not verified.",
                "[May have had fevers] last week.",
                "[Fever not confirmed] by staff.",
                "[Unclear whether there was a fever].",
                "[Borderline temperature, fever doubtful].",
            ),
        },
        "dyspnea": {
            "affirmed": (
                "[Dyspnoeic] on arrival.",
                "[SOB at rest].",
                "Describes [air hunger] since {d} days.",
                "[Struggling to breathe] after a few steps.",
                "[Shortness of breath on stairs] for {d} days.",
                "[Short of breath when talking].",
                "[Breathlessness worse at night].",
                "[Dyspnea with minimal activity] noted.",
                "[Increased work of breathing] observed.",
                "[Breathless after a short walk].",
            ),
            "negated": (
                "[No SOB].",
                "[Not short of breath] today.",
                "[No respiratory distress].",
                "[Dyspnoea: absent].",
                "[No breathlessness reported].",
                "[Without dyspnea] on exertion.",
                "[Shortness of breath denied].",
                "[Breathing easily], speaking full sentences.",
            ),
            "uncertain": (
                "[Possibly dyspnoeic] at home.",
                "[Breathlessness not clearly established].",
                "[Might be a little short of breath], hard to assess.",
                "[Equivocal dyspnoea] on history.",
                "[Unclear if dyspnea] is new.",
            ),
        },
    },
}

_INDICATION = (
    "Cough.", "Chest pain.", "Evaluate for pneumonia.", "Rule out pneumonia.", "Follow-up chest imaging.",
    "Pre-operative assessment.", "Fall at home.", "Weight loss.", "Known COPD, review.", "Smoker, screening.",
    "Post-operative check.", "Lines and tubes check.", "Routine review.", "Haemoptysis.", "Fatigue.",
)
_HISTORY = (
    "History of hypertension.", "Type 2 diabetes on metformin.", "Ex-smoker, {d} pack-years.",
    "Previous appendicectomy.", "Atrial fibrillation on anticoagulation.", "Asthma since childhood.",
    "Chronic kidney disease stage 3.", "Hypothyroidism, on levothyroxine.", "No significant past history.",
    "Recent travel abroad.", "Lives alone, independent.", "Works as a teacher.", "Known osteoarthritis.",
    "Prior myocardial infarction.", "Gastro-oesophageal reflux.", "Allergic to penicillin.",
)
_EXAM = (
    "Heart sounds normal.", "Abdomen soft, non-tender.", "Oxygen saturation {s}% on room air.",
    "Heart rate {h} per minute.", "Blood pressure {b}.", "Mild pedal oedema.", "Alert and oriented.",
    "Crackles at the bases.", "Chest clear on auscultation.", "Reduced air entry on the left.",
    "Wheeze bilaterally.", "Calves soft and non-tender.",
)
_PLAN = (
    "Chest radiograph requested.", "Bloods sent.", "Review with results.", "Discussed with registrar.",
    "Start empirical treatment if indicated.", "Repeat observations in 4 hours.", "Sputum culture sent.",
    "Safety-net advice given.", "Admit for observation.", "Outpatient follow-up arranged.",
)
_LONG = (
    "Medications reviewed and reconciled with the pharmacy list; no changes made today.",
    "Social history: lives with partner in a second-floor flat, independent with activities of daily living.",
    "Family history of ischaemic heart disease in father and of breast cancer in mother.",
    "The patient was seen together with a relative, who contributed to the history.",
    "Previous imaging reviewed on the system; the comparison study from last year is available.",
    "Nutrition screening completed; no concerns were raised by the dietitian.",
    "Mobility assessed by physiotherapy, walking with one stick.",
    "Advance care planning discussed briefly; patient wishes to be for full escalation.",
    "Vaccinations reported as up to date, including the seasonal influenza vaccine.",
    "Review of systems otherwise unremarkable for genitourinary and neurological complaints.",
    "Pain controlled with regular paracetamol, pain score {d} out of 10.",
    "Skin intact, pressure areas checked and documented.",
    "Blood results from the previous admission reviewed with the team.",
    "Discussed the findings and the next steps with the patient, who agrees with the plan.",
)
_HEADINGS = (
    ("INDICATION:", "HISTORY:", "EXAMINATION:", "PLAN:"),
    ("Reason for exam:", "Background:", "On examination:", "Plan:"),
    ("CLINICAL QUESTION:", "PMH:", "FINDINGS ON EXAM:", "ASSESSMENT/PLAN:"),
    ("Indication -", "History -", "Exam -", "Plan -"),
)


@dataclass(frozen=True)
class Mention:
    """One evidence phrase in a note.

    Args:
        label: finding (``fever`` or ``dyspnea``).
        start: first character of the span in the note.
        end: one past the last character.
        polarity: ``affirmed``, ``negated`` or ``uncertain``.
    """

    label: str
    start: int
    end: int
    polarity: str

    def as_dict(self) -> dict[str, str | int]:
        return {"label": self.label, "start": self.start, "end": self.end, "polarity": self.polarity}


@dataclass
class SyntheticNote:
    """A rendered note.

    Args:
        text: the note.
        mentions: every evidence phrase with its span, in text order.
    """

    text: str
    mentions: list[Mention] = field(default_factory=list)


def phrase_pool_for_split(split: str, *, val_wording: ValWording = "unseen") -> str:
    """Which phrase pool a split uses: its own (``"train"``, ``"val"``, ``"test"``), except that validation notes use
    the training pool when ``val_wording="training"`` (the generator before version 5)."""
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be train, val or test, got {split!r}")
    if split == "val" and val_wording == "training":
        return "train"
    return split


def _fill(rng: np.random.Generator, template: str) -> str:
    """Fill numeric placeholders of a template."""
    return template.format(
        t=f"{rng.uniform(38.1, 40.2):.1f}",
        f=f"{rng.uniform(100.6, 104.0):.1f}",
        n=f"{rng.uniform(36.2, 37.4):.1f}",
        d=int(rng.integers(2, 12)),
        s=int(rng.integers(88, 100)),
        h=int(rng.integers(58, 118)),
        b=f"{int(rng.integers(100, 170))}/{int(rng.integers(55, 100))}",
    )


def _mention_sentence(rng: np.random.Generator, template: str) -> tuple[str, int, int]:
    """Fill a ``[span]`` template; return (sentence, span start, span end) within the sentence."""
    a, b = template.index("["), template.index("]")
    before, inside, after = template[:a], template[a + 1 : b], template[b + 1 :]
    before, inside, after = _fill(rng, before), _fill(rng, inside), _fill(rng, after)
    return before + inside + after, len(before), len(before) + len(inside)


def _mention_plan(rng: np.random.Generator, truth: int) -> list[str]:
    """Polarities to mention for one finding given its truth (1 present, 0 absent)."""
    u = rng.random()
    if truth == 1:
        if u < 0.88:
            plan = ["affirmed"]
        elif u < 0.94:
            plan = ["uncertain"]  # documented only vaguely
        else:
            plan = []  # not documented at all
        if plan == ["affirmed"] and rng.random() < 0.3:
            plan.append("affirmed")  # repeated in another section
    else:
        if u < 0.48:
            plan = ["negated"]
        elif u < 0.6:
            plan = ["uncertain"]
        elif u < 0.65:
            plan = ["negated", "uncertain"]
        else:
            plan = []
    return plan


def render_note(
    rng: np.random.Generator,
    *,
    truth: dict[str, int],
    split: str,
    long: bool = False,
    val_wording: ValWording = "unseen",
) -> SyntheticNote:
    """Write one clinical note.

    Args:
        rng: random generator (consumed).
        truth: ``{"fever": 0|1, "dyspnea": 0|1}`` ground truth of the note findings.
        split: ``train``, ``val`` or ``test``; picks the phrase pool (:func:`phrase_pool_for_split`).
        long: pad with many extra sentences (several hundred words).
        val_wording: ``"unseen"`` (validation notes use their own phrase pool) or ``"training"``.

    Returns:
        :class:`SyntheticNote` with the text and the span of every fever/dyspnea mention.
    """
    pool = PHRASES[phrase_pool_for_split(split, val_wording=val_wording)]
    sections: list[list[tuple[str, str | None, tuple[int, int] | None]]] = [[] for _ in range(4)]

    def neutral(options: tuple[str, ...], k: int) -> list[tuple[str, None, None]]:
        picks = rng.choice(len(options), size=min(k, len(options)), replace=False)
        return [(_fill(rng, options[int(i)]), None, None) for i in picks]

    sections[0] += neutral(_INDICATION, int(rng.integers(1, 3)))
    sections[1] += neutral(_HISTORY, int(rng.integers(1, 3)))
    sections[2] += neutral(_EXAM, int(rng.integers(1, 3)))
    sections[3] += neutral(_PLAN, 1)
    if long:
        sections[1] += neutral(_LONG, len(_LONG)) + neutral(_HISTORY, len(_HISTORY))
        sections[2] += neutral(_EXAM, len(_EXAM)) + neutral(_LONG, len(_LONG))
        sections[3] += neutral(_PLAN, len(_PLAN))
    for label in NOTE_LABELS:
        for polarity in _mention_plan(rng, int(truth[label])):
            templates = pool[label][polarity]
            sentence, a, b = _mention_sentence(rng, templates[int(rng.integers(len(templates)))])
            target = sections[int(rng.choice([0, 1, 1, 2]))]
            target.insert(int(rng.integers(0, len(target) + 1)), (sentence, f"{label}:{polarity}", (a, b)))
    headings = _HEADINGS[int(rng.integers(len(_HEADINGS)))]
    one_line = rng.random() < 0.5
    text = ""
    mentions: list[Mention] = []
    for heading, sentences in zip(headings, sections):
        if not sentences:
            continue
        text += ("\n" if text else "") + heading + (" " if one_line else "\n")
        for i, (sentence, tag, span) in enumerate(sentences):
            if i:
                text += " "
            if tag is not None and span is not None:
                label, polarity = tag.split(":")
                mentions.append(Mention(label, len(text) + span[0], len(text) + span[1], polarity))
            text += sentence
    return SyntheticNote(text=text, mentions=mentions)
