"""Real-report benchmark of the text branch on the Indiana University chest X-ray reports (run on demand).

Two settings on the documented split (``clinmm data indiana``: Random(0) 70/15/15), 12 MeSH major labels:

- *report*: FINDINGS + IMPRESSION → labels (CheXbert-style report labelling; TF-IDF is strong here);
- *note*: INDICATION only → labels (the note a clinician writes before the image is read; weak signal).

Each against a scikit-learn TF-IDF (word 1–2-grams) + logistic regression baseline (C picked on val), macro and
per-label AUROC with 95 % bootstrap CIs (2,000 report-level replicates), a paired bootstrap of the macro-AUROC
difference (text − baseline) for the note setting, a negation check on templated pairs, and the effect of MLM
domain pretraining (held-out MLM loss on test-split reports, then the note setting from the pretrained encoder).

The text branch is :class:`clinmm.text.classifier.TextClassifier` (label-query attention over MiniLM tokens) fine-tuned
with the lower ``--freeze-layers`` layers frozen; their states are computed once per note
(:func:`~clinmm.text.classifier.cache_frozen_states`), so only the upper layers and the head train — the CPU budget.

    nice -n 10 .venv/bin/python benchmarks/indiana_text.py --out runs/indiana_text/results.json

Prints a JSON summary and writes it to ``--out``. Figures go to docs/text.md by hand.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

logger = logging.getLogger("indiana_text")

NEGATION_TERMS = {  # label column → phrases a report would use
    "label_cardiomegaly": ["cardiomegaly", "enlargement of the cardiac silhouette"],
    "label_opacity": ["airspace opacity", "opacity in the right lower lobe"],
    "label_pulmonary_atelectasis": ["atelectasis", "bibasilar atelectasis"],
    "label_calcified_granuloma": ["calcified granuloma"],
    "label_cicatrix": ["scarring", "left apical scarring"],
    "label_markings": ["increased interstitial markings"],
    "label_aorta": ["tortuous aorta"],
}
POS_TEMPLATES = ["FINDINGS: There is {x}.", "FINDINGS: {X}. IMPRESSION: {X}.",
                 "IMPRESSION: Findings consistent with {x}."]
NEG_TEMPLATES = ["FINDINGS: There is no {x}.", "FINDINGS: No {x}. IMPRESSION: No {x}.",
                 "IMPRESSION: No evidence of {x}."]


# Negation augmentation (``--negation-augment F``): a fraction F of the training reports get one sentence appended
# that negates a finding the report is labelled NEGATIVE for (its labels are unchanged). The cues are disjoint from
# the check's templates above — none uses the word "no" — so the check measures whether negation generalises to
# another cue, not whether the model memorised a template. Terms come from the MeSH label names.
AUG_TERMS = {
    "label_cardiomegaly": "cardiomegaly",
    "label_opacity": "opacity",
    "label_pulmonary_atelectasis": "atelectasis",
    "label_calcified_granuloma": "calcified granuloma",
    "label_calcinosis": "calcification",
    "label_cicatrix": "scarring",
    "label_markings": "prominent markings",
    "label_aorta": "aortic tortuosity",
}
AUG_TEMPLATES = ["Negative for {x}.", "{X} is not seen.", "Without {x}.", "{X}: absent.", "Free of {x}.",
                 "{X} has been excluded.", "Not consistent with {x}.", "{X} is not present."]


def augment_negations(texts, y, labels, *, fraction, seed):
    """Append a negated absent finding to ``fraction`` of the texts (labels unchanged); returns new texts and count."""
    import random

    rng = random.Random(seed)
    cols = [labels.index(c) for c in AUG_TERMS if c in labels]
    out, n = [], 0
    for text, row in zip(texts, y):
        absent = [c for c in cols if row[c] == 0]
        if absent and rng.random() < fraction:
            x = AUG_TERMS[labels[rng.choice(absent)]]
            sentence = rng.choice(AUG_TEMPLATES).format(x=x, X=x[0].upper() + x[1:])
            text, n = f"{text.rstrip()} {sentence}", n + 1
        out.append(text)
    return out, n


def tfidf_lr(train_x, y_train, val_x, y_val, test_x):
    """TF-IDF word 1–2-grams + one logistic regression per label; C chosen on val macro AUROC."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    vec = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
    xtr, xva = vec.fit_transform(train_x), vec.transform(val_x)  # the test notes go through predict() below
    best = None
    for C in (0.3, 1.0, 3.0, 10.0, 30.0):
        models = [LogisticRegression(C=C, max_iter=2000).fit(xtr, y_train[:, c]) for c in range(y_train.shape[1])]
        pv = np.stack([m.predict_proba(xva)[:, 1] for m in models], 1)
        auc = np.mean([roc_auc_score(y_val[:, c], pv[:, c]) for c in range(y_val.shape[1])])
        if best is None or auc > best[0]:
            best = (auc, C, models)
    _, C, models = best
    predict = lambda texts: np.stack([m.predict_proba(vec.transform(texts))[:, 1] for m in models], 1)  # noqa: E731
    return predict(test_x), C, predict


def bootstrap_auroc(y, p, *, n_boot, seed, p_ref=None):
    """Per-label and macro AUROC with percentile 95 % CIs; with ``p_ref`` also the paired difference p − p_ref."""
    from sklearn.metrics import roc_auc_score

    from clinmm.metrics import rank_auroc

    rng = np.random.default_rng(seed)
    n, C = y.shape
    counts = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(float)  # (R, n) report-level resampling
    out = {"per_label": {}, "n_boot": n_boot}
    reps, reps_ref = [], []
    for c in range(C):
        auc = roc_auc_score(y[:, c], p[:, c])
        r = rank_auroc(y[:, c], p[:, c], sample_weight=counts)  # (R,)
        reps.append(r)
        entry = {"auroc": auc, "ci": [float(np.nanpercentile(r, 2.5)), float(np.nanpercentile(r, 97.5))],
                 "n_pos": int(y[:, c].sum())}
        if p_ref is not None:
            rr = rank_auroc(y[:, c], p_ref[:, c], sample_weight=counts)
            reps_ref.append(rr)
            entry["ref_auroc"] = roc_auc_score(y[:, c], p_ref[:, c])
        out["per_label"][c] = entry
    reps = np.stack(reps)  # (C, R)
    macro = float(np.mean([out["per_label"][c]["auroc"] for c in range(C)]))
    macro_r = np.nanmean(reps, 0)  # (R,)
    out["macro"] = {"auroc": macro,
                    "ci": [float(np.nanpercentile(macro_r, 2.5)), float(np.nanpercentile(macro_r, 97.5))]}
    if p_ref is not None:
        ref_r = np.nanmean(np.stack(reps_ref), 0)
        diff = macro_r - ref_r
        ref_macro = float(np.mean([out["per_label"][c]["ref_auroc"] for c in range(C)]))
        out["paired_diff"] = {"diff": macro - ref_macro, "ci95": [float(np.nanpercentile(diff, 2.5)),
                                                                  float(np.nanpercentile(diff, 97.5))],
                              "one_sided_lower95": float(np.nanpercentile(diff, 5.0))}
    return out


def run_text_branch(name, df, labels, column, *, path, max_length, stride, freeze, epochs, batch_size, lr_enc, lr_head,
                    seed, threads, pos_weight=False, max_seconds=0.0, shared_readout=False, cache_dir=None,
                    negation_augment=0.0):
    import torch

    from clinmm.config import TextEncoderConfig
    from clinmm.models.text import TextEncoder
    from clinmm.text.classifier import (TextClassifier, cache_frozen_states, encode_notes, fit_text_classifier,
                                        predict_proba)

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    t0 = time.monotonic()
    cfg = TextEncoderConfig(path=path, max_length=max_length, stride=stride, max_chunks=8, freeze_layers=freeze)
    model = TextClassifier(encoder=TextEncoder.from_config(cfg), num_labels=len(labels), shared_readout=shared_readout)
    parts = {s: df[df.split == s] for s in ("train", "val", "test")}
    ys = {s: parts[s][labels].to_numpy(dtype=np.float32) for s in parts}
    texts = {s: parts[s][column].tolist() for s in parts}
    n_aug = 0
    if negation_augment:
        texts["train"], n_aug = augment_negations(texts["train"], ys["train"], labels, fraction=negation_augment,
                                                  seed=seed)
        logger.info("%s: negation augmentation appended a negated absent finding to %d of %d training texts", name,
                    n_aug, len(texts["train"]))
    notes = {s: encode_notes(model, texts[s]) for s in parts}
    # the frozen-layer states depend only on the encoder weights, the texts and the tokenisation: reusable across runs
    # of the packaged encoder (not of a path, whose weights may have been retrained since)
    aug_tag = f"_neg{negation_augment:g}s{seed}" if negation_augment else ""
    cache_file = (Path(cache_dir) / f"frozen_{column}_f{freeze}_l{max_length}_s{stride}_n{len(df)}{aug_tag}.pt"
                  if cache_dir and freeze and path is None else None)
    reused = cache_file is not None and cache_file.is_file()
    if reused:
        caches = torch.load(cache_file)
    else:
        caches = {s: cache_frozen_states(model, notes[s]) for s in parts} if freeze else {s: None for s in parts}
        if cache_file is not None:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            torch.save(caches, cache_file)
    t_cache = time.monotonic() - t0
    logger.info("%s: encoded + cached %s in %.0f s", name, {s: len(v) for s, v in notes.items()}, t_cache)
    fit = fit_text_classifier(model, notes["train"], ys["train"], notes["val"], ys["val"], epochs=epochs,
                              batch_size=batch_size, lr_encoder=lr_enc, lr_head=lr_head, seed=seed,
                              train_cache=caches["train"], val_cache=caches["val"], pos_weight=pos_weight,
                              max_seconds=max_seconds)
    p_test = predict_proba(model, notes["test"], cache=caches["test"])
    info = {"seconds_total": round(time.monotonic() - t0, 1), "seconds_cache": round(t_cache, 1),
            "seconds_fit": round(fit.seconds, 1), "best_epoch": fit.best_epoch, "val_macro_auroc": fit.best_val_auroc,
            "history": fit.history, "freeze_layers": freeze, "max_length": max_length, "epochs": epochs,
            "device": "cpu", "torch_threads": threads, "fit_budget_seconds": max_seconds,
            "shared_readout": shared_readout, "frozen_cache_reused": reused,
            "negation_augment": {"fraction": negation_augment, "texts_augmented": n_aug}}
    return model, p_test, info


def negation_check(model, predict_baseline, labels):
    """Templated pairs: p(label | "no X") must be lower than p(label | "X")."""
    from clinmm.text.classifier import encode_notes, predict_proba

    pairs = []
    for col, phrases in NEGATION_TERMS.items():
        if col not in labels:
            continue
        c = labels.index(col)
        for x in phrases:
            for pt, nt in zip(POS_TEMPLATES, NEG_TEMPLATES):
                pos, neg = pt.format(x=x, X=x[0].upper() + x[1:]), nt.format(x=x, X=x[0].upper() + x[1:])
                pairs.append((col, c, pos, neg))
    texts = [t for _, _, a, b in pairs for t in (a, b)]
    p = predict_proba(model, encode_notes(model, texts))
    pb = predict_baseline(texts)
    rows, ok, ok_b = [], 0, 0
    for i, (col, c, pos, neg) in enumerate(pairs):
        pp, pn = float(p[2 * i, c]), float(p[2 * i + 1, c])
        bp, bn = float(pb[2 * i, c]), float(pb[2 * i + 1, c])
        ok += pn < pp
        ok_b += bn < bp
        rows.append({"label": col, "affirmed": pos, "negated": neg, "p_affirmed": pp, "p_negated": pn,
                     "baseline_affirmed": bp, "baseline_negated": bn})
    return {"n_pairs": len(pairs), "text_branch_pass_rate": ok / len(pairs), "baseline_pass_rate": ok_b / len(pairs),
            "pairs": rows}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="runs/indiana", help="folder of `clinmm data indiana` (made if missing)")
    ap.add_argument("--out", default="runs/indiana_text/results.json")
    ap.add_argument("--stages", default="report,note,mlm", help="comma list: report, note, mlm")
    ap.add_argument("--freeze-layers", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--note-max-length", type=int, default=48)
    ap.add_argument("--report-max-length", type=int, default=128)
    ap.add_argument("--mlm-seconds", type=float, default=900.0)
    ap.add_argument("--mlm-heldout", type=int, default=300, help="test-split reports used for held-out MLM loss")
    ap.add_argument("--mlm-epochs", type=int, default=3)
    ap.add_argument("--n-boot", type=int, default=2000)
    ap.add_argument("--fit-seconds", type=float, default=0.0, help="wall-clock budget per fine-tune (0 = none)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--reuse-mlm", action="store_true", help="reuse an earlier MLM output directory (pretrain.json)")
    ap.add_argument("--shared-readout", action="store_true",
                    help="report setting: label readouts share a common vector (TextClassifier(shared_readout=True))")
    ap.add_argument("--cache-dir", default="", help="keep the frozen-layer states here and reuse them across runs")
    ap.add_argument("--negation-augment", type=float, default=0.0,
                    help="report setting: fraction of training reports given an appended negated absent finding "
                         "(cues disjoint from the negation check's templates)")
    ap.add_argument("--limit", type=int, default=0, help="smoke test: keep the first N reports of each split")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")

    import pandas as pd

    from clinmm.data.indiana import write_indiana_manifest

    data = Path(args.data)
    if not (data / "manifest.csv").is_file():
        write_indiana_manifest(data)
    df = pd.read_csv(data / "manifest.csv", keep_default_na=False, dtype=str)
    labels = [c for c in df.columns if c.startswith("label_")]
    df[labels] = df[labels].astype(int)
    if args.limit:
        df = df.groupby("split", group_keys=False).head(args.limit)
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    results = json.loads(out_path.read_text()) if out_path.is_file() else {}
    results["labels"] = labels
    results["split_counts"] = df.split.value_counts().to_dict()
    stages = set(args.stages.split(","))
    parts = {s: df[df.split == s] for s in ("train", "val", "test")}
    y = {s: parts[s][labels].to_numpy(dtype=float) for s in parts}

    def save():
        out_path.write_text(json.dumps(results, indent=1, default=float))

    settings = {"note": ("note_text", args.note_max_length, 8), "report": ("report_text", args.report_max_length, 32)}
    baselines = {}
    for setting, (column, max_len, stride) in settings.items():
        if setting not in stages and not (setting == "note" and "mlm" in stages):
            continue
        t0 = time.monotonic()
        p_base, C, predict = tfidf_lr(parts["train"][column].tolist(), y["train"], parts["val"][column].tolist(),
                                      y["val"], parts["test"][column].tolist())
        baselines[setting] = (p_base, predict)
        results.setdefault(setting, {})["baseline"] = {
            "C": C, "seconds": round(time.monotonic() - t0, 1),
            **bootstrap_auroc(y["test"], p_base, n_boot=args.n_boot, seed=args.seed)}
        save()
        if setting not in stages:
            continue
        model, p_text, info = run_text_branch(
            setting, df, labels, column, path=None, max_length=max_len, stride=stride, freeze=args.freeze_layers,
            epochs=args.epochs, batch_size=32, lr_enc=5e-5, lr_head=2e-3, seed=args.seed, threads=args.threads,
            max_seconds=args.fit_seconds, shared_readout=args.shared_readout and setting == "report",
            cache_dir=args.cache_dir or None,
            negation_augment=args.negation_augment if setting == "report" else 0.0)
        res = bootstrap_auroc(y["test"], p_text, n_boot=args.n_boot, seed=args.seed, p_ref=p_base)
        results[setting]["text_branch"] = {**info, **res}
        results[setting]["error_side_by_side"] = {"text_branch_1_minus_macro_auroc": 1 - res["macro"]["auroc"],
                                                  "baseline_1_minus_macro_auroc":
                                                      1 - results[setting]["baseline"]["macro"]["auroc"]}
        if setting == "report":
            results["negation"] = negation_check(model, predict, labels)
        save()
        logger.info("%s: text %.4f vs baseline %.4f", setting, res["macro"]["auroc"],
                    results[setting]["baseline"]["macro"]["auroc"])

    if "mlm" in stages:
        from clinmm.text.pretrain import pretrain_mlm

        import torch

        torch.set_num_threads(args.threads)
        corpus = lambda d: ["\n".join(x for x in (r.indication, r.report_text) if x.strip())  # noqa: E731
                            for r in d.itertuples()]
        mlm_dir = out_path.parent / "minilm_indiana_mlm"
        if args.reuse_mlm and (mlm_dir / "pretrain.json").is_file():
            from types import SimpleNamespace

            pr = SimpleNamespace(**json.loads((mlm_dir / "pretrain.json").read_text())["result"])
        else:
            pr = pretrain_mlm(corpus(pd.concat([parts["train"], parts["val"]])), mlm_dir,
                              heldout_notes=corpus(parts["test"])[: args.mlm_heldout],
                              max_length=128, epochs=args.mlm_epochs, batch_size=16, lr=5e-5,
                              max_seconds=args.mlm_seconds, seed=args.seed)
        results["mlm"] = {"pretrain": pr.__dict__}
        save()
        _, p_mlm, info = run_text_branch(
            "note+mlm", df, labels, "note_text", path=str(mlm_dir), max_length=args.note_max_length, stride=8,
            freeze=args.freeze_layers, epochs=args.epochs, batch_size=32, lr_enc=5e-5, lr_head=2e-3, seed=args.seed,
            threads=args.threads, max_seconds=args.fit_seconds)
        res = bootstrap_auroc(y["test"], p_mlm, n_boot=args.n_boot, seed=args.seed, p_ref=baselines["note"][0])
        results["mlm"]["note_text_branch_from_pretrained"] = {**info, **res}
        if "text_branch" in results.get("note", {}):
            results["mlm"]["note_text_branch_without_pretraining"] = results["note"]["text_branch"]["macro"]
        save()
    summary = {k: v for k, v in results.items() if k != "negation"}
    print(json.dumps(_short(summary), indent=1, default=float))
    if "negation" in results:
        neg = results["negation"]
        print(json.dumps({k: neg[k] for k in ("n_pairs", "text_branch_pass_rate", "baseline_pass_rate")}))
    return 0


def _short(obj):
    """Drop bulky entries (per-epoch history) from the printed summary."""
    if isinstance(obj, dict):
        return {k: _short(v) for k, v in obj.items() if k not in ("history", "pairs")}
    return obj




def render_markdown(paths: list[str]) -> str:
    """Markdown tables from one or more results JSON files (``python benchmarks/indiana_text.py --render a.json``)."""
    res: dict = {}
    for p in paths:
        for k, v in json.loads(Path(p).read_text()).items():
            if isinstance(v, dict) and isinstance(res.get(k), dict):
                res[k].update(v)
            else:
                res[k] = v
    labels = [c.removeprefix("label_").replace("_", " ") for c in res["labels"]]
    fmt = lambda d: f"{d['auroc']:.3f} [{d['ci'][0]:.3f}, {d['ci'][1]:.3f}]"  # noqa: E731
    lines = []
    titles = (("report", "Report labelling (findings + impression)"), ("note", "Clinical note (indication)"))
    for setting, title in titles:
        if "text_branch" not in res.get(setting, {}):
            continue
        b, t = res[setting]["baseline"], res[setting]["text_branch"]
        lines += [f"### {title}", "", "| label | n pos (test) | TF-IDF + LR | text branch (MiniLM) |",
                  "|---|---|---|---|"]
        for c, name in enumerate(labels):
            bl, tl = b["per_label"][str(c)], t["per_label"][str(c)]
            lines.append(f"| {name} | {tl['n_pos']} | {fmt(bl)} | {fmt(tl)} |")
        lines.append(f"| **macro** | | **{fmt(b['macro'])}** | **{fmt(t['macro'])}** |")
        pdiff = t["paired_diff"]
        lines += ["", f"1 − macro AUROC: text branch {1 - t['macro']['auroc']:.4f}, "
                  f"baseline {1 - b['macro']['auroc']:.4f}. "
                  f"Paired bootstrap (text − baseline): {pdiff['diff']:+.4f}, 95 % CI [{pdiff['ci95'][0]:+.4f}, "
                  f"{pdiff['ci95'][1]:+.4f}], one-sided 95 % lower bound {pdiff['one_sided_lower95']:+.4f}. "
                  f"Training on the shared CPU: {t['seconds_total']:.0f} s wall-clock in all "
                  f"({t['seconds_cache']:.0f} s frozen-layer "
                  f"cache, {t['seconds_fit']:.0f} s fine-tuning, best epoch {t['best_epoch'] + 1} of "
                  f"{len(t['history'])}, "
                  f"freeze_layers={t['freeze_layers']}, max_length={t['max_length']}).", ""]
    if "negation" in res:
        n = res["negation"]
        lines += [f"Negation check: {n['n_pairs']} templated pairs; p(\"no X\") < p(\"X\") for "
                  f"{n['text_branch_pass_rate']:.0%} with the text branch "
                  f"({n['baseline_pass_rate']:.0%} with TF-IDF + LR).", ""]
    if "mlm" in res and "pretrain" in res["mlm"]:
        pr = res["mlm"]["pretrain"]
        lines += [f"MLM pretraining: {pr['steps']} steps on {pr['n_train']} train+val reports "
                  f"({pr['seconds']:.0f} s wall-clock on the shared CPU); "
                  f"held-out MLM loss on {pr['n_heldout']} test reports {pr['heldout_loss_before']:.3f} → "
                  f"{pr['heldout_loss_after']:.3f}."]
        if "note_text_branch_from_pretrained" in res["mlm"]:
            m = res["mlm"]["note_text_branch_from_pretrained"]
            lines += [f"Clinical-note macro AUROC from the pretrained encoder: {fmt(m['macro'])}"
                      + (f" vs {fmt(res['note']['text_branch']['macro'])} without pretraining"
                         if "text_branch" in res.get("note", {}) else "")
                      + f" (paired vs TF-IDF: {m['paired_diff']['diff']:+.4f}, one-sided lower bound "
                      f"{m['paired_diff']['one_sided_lower95']:+.4f}).", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--render":
        print(render_markdown(sys.argv[2:]))
        sys.exit(0)
    sys.exit(main())
