"""How hard is the synthetic data set? Quick single-modality proxies and the trivial baselines, on the test split.

Run on demand (not a test)::

    .venv/bin/python benchmarks/synthetic_difficulty.py --data sample_data/demo          # an existing set
    .venv/bin/python benchmarks/synthetic_difficulty.py --studies 1000 --seed 0         # generate into a temp dir

Image proxies read each image through the real pipeline (``clinmm.io.load.load_image`` →
``clinmm.data.transforms.prepare_image`` at 128 px, percentile intensity) and fit, on train (+ val for early
stopping of nothing: fixed epochs), (a) logistic regression on 32×32 average-pooled pixels and (b) a tiny CNN
(4 strided conv layers + global max/avg pool, a few epochs). Text proxy: TF-IDF (1–2 grams) + logistic regression
fit on train notes (train phrasings) and scored on the test notes (test-only phrasings). Pneumonia proxies:
image-only = consolidation probability, text-only = fever probability, fused = their product.
Prints AUROC per finding on the test split (studies with a known label and the needed modality).
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from clinmm.baselines import evaluate_baselines
from clinmm.config import DataConfig
from clinmm.data.synthetic import generate_sample_data
from clinmm.data.transforms import prepare_image
from clinmm.io.load import load_image

IMAGE = ("nodule", "consolidation")
TEXT = ("fever", "dyspnea")


def _auc(y: np.ndarray, s: np.ndarray) -> float:
    keep = ~np.isnan(y)
    y, s = y[keep], s[keep]
    return float(roc_auc_score(y, s)) if len(np.unique(y)) == 2 else float("nan")


def _labels(rows: list[dict[str, str]], name: str) -> np.ndarray:
    return np.array([float(r[f"label_{name}"]) if r[f"label_{name}"] != "" else np.nan for r in rows])


class TinyCNN(torch.nn.Module):
    def __init__(self, n_out: int) -> None:
        super().__init__()
        chans = [1, 16, 32, 48, 64]
        layers: list[torch.nn.Module] = []
        for a, b in zip(chans[:-1], chans[1:]):
            layers += [torch.nn.Conv2d(a, b, 3, stride=2, padding=1), torch.nn.BatchNorm2d(b), torch.nn.ReLU()]
        self.features = torch.nn.Sequential(*layers)
        self.head = torch.nn.Linear(2 * chans[-1], n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)  # (B, 64, h, w)
        return self.head(torch.cat([f.amax((2, 3)), f.mean((2, 3))], 1))  # (B, n_out)


def _cnn(x_tr: np.ndarray, y_tr: np.ndarray, x_te: np.ndarray, epochs: int, seed: int) -> np.ndarray:
    torch.manual_seed(seed)
    model = TinyCNN(y_tr.shape[1])
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    xt, yt = torch.from_numpy(x_tr), torch.from_numpy(y_tr)
    mask = ~torch.isnan(yt)
    yt = torch.nan_to_num(yt)
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(xt))
        for i in range(0, len(xt), 32):
            b = perm[i : i + 32]
            xb = xt[b]
            if torch.rand(()) < 0.5:
                xb = xb.flip(-1)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(model(xb), yt[b], reduction="none")
            loss = (loss * mask[b]).sum() / mask[b].sum().clamp(min=1)
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        return torch.sigmoid(model(torch.from_numpy(x_te))).numpy()


def _text(rows: list[dict[str, str]], notes: np.ndarray, split: np.ndarray, has_note: np.ndarray
          ) -> dict[str, np.ndarray]:
    print("\n== text proxy: TF-IDF + LR fit on train phrasings ==")
    trn, ten, van = (split == "train") & has_note, (split == "test") & has_note, (split == "val") & has_note
    vec = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True).fit(notes[trn])
    p_txt = {}
    for name in TEXT:
        y = _labels(rows, name)
        ok = trn & ~np.isnan(y)
        lr = LogisticRegression(C=4.0, max_iter=2000).fit(vec.transform(notes[ok]), y[ok])
        p_txt[name] = lr.predict_proba(vec.transform(notes))[:, 1]
        print(f"tfidf+LR {name:8s} val (seen phrasings) {_auc(y[van], p_txt[name][van]):.3f}   "
              f"test (unseen phrasings) {_auc(y[ten], p_txt[name][ten]):.3f}")
    return p_txt


def _minilm(rows: list[dict[str, str]], notes: np.ndarray, split: np.ndarray, has_note: np.ndarray, epochs: int,
            seed: int) -> None:
    """The real text branch (MiniLM + label-query attention head) fine-tuned on train notes, scored on val/test."""
    from clinmm.config import demo_config
    from clinmm.models.text import TextEncoder
    from clinmm.text.classifier import TextClassifier, encode_notes, fit_text_classifier, predict_proba

    y = np.stack([_labels(rows, n) for n in TEXT], 1).astype(np.float32)  # (N, 2), NaN = unknown
    idx = {s: np.flatnonzero((split == s) & has_note) for s in ("train", "val", "test")}
    t = time.perf_counter()
    model = TextClassifier(encoder=TextEncoder.from_config(demo_config().text), num_labels=len(TEXT))
    enc = {s: encode_notes(model, list(notes[i])) for s, i in idx.items()}
    fit_text_classifier(model, enc["train"], y[idx["train"]], enc["val"], y[idx["val"]], epochs=epochs, seed=seed)
    print(f"\n== text branch (MiniLM, demo text config, {epochs} epochs, {time.perf_counter() - t:.0f} s) ==")
    for s in ("val", "test"):
        p = predict_proba(model, enc[s])
        print(f"{s:5s} " + "  ".join(f"{n} {_auc(y[idx[s], j], p[:, j]):.3f}" for j, n in enumerate(TEXT)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, help="existing generated set (else one is generated)")
    ap.add_argument("--studies", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--text-only", action="store_true", help="skip the image proxies")
    ap.add_argument("--minilm-epochs", type=int, default=0,
                    help="also fine-tune the real text branch (clinmm.text.classifier, demo text config) this many "
                         "epochs on train notes and score test notes (slow on CPU)")
    args = ap.parse_args()
    torch.set_num_threads(2)
    data = args.data
    if data is None:
        data = Path(tempfile.mkdtemp(prefix="clinmm-synth-")) / "set"
        t = time.perf_counter()
        generate_sample_data(data, studies=args.studies, seed=args.seed)
        print(f"generated {args.studies} studies in {time.perf_counter() - t:.1f} s → {data}")
    rows = list(csv.DictReader(open(data / "manifest.csv", newline="", encoding="utf-8")))
    split = np.array([r["split"] for r in rows])
    has_img = np.array([bool(r["image_path"]) for r in rows])
    has_note = np.array([bool(r["note_text"]) for r in rows])

    notes = np.array([r["note_text"] for r in rows], dtype=object)
    if args.minilm_epochs:
        _minilm(rows, notes, split, has_note, args.minilm_epochs, args.seed)
    if args.text_only:
        _text(rows, notes, split, has_note)
        return
    t = time.perf_counter()
    cfg = DataConfig(image_size=args.size)
    imgs = np.zeros((len(rows), 1, args.size, args.size), dtype=np.float32)
    for i, r in enumerate(rows):
        if r["image_path"]:
            imgs[i] = prepare_image(load_image(data / r["image_path"]), config=cfg).tensor.numpy()
    print(f"loaded {has_img.sum()} images in {time.perf_counter() - t:.1f} s")
    tr = (split == "train") & has_img
    te = (split == "test") & has_img
    y_img = np.stack([_labels(rows, n) for n in IMAGE], 1).astype(np.float32)  # (N, 2)

    pooled = torch.nn.functional.adaptive_avg_pool2d(torch.from_numpy(imgs), 32).flatten(1).numpy()  # (N, 1024)
    print("\n== image proxies (test split) ==")
    for j, name in enumerate(IMAGE):
        ok = tr & ~np.isnan(y_img[:, j])
        lr = LogisticRegression(C=0.05, max_iter=2000).fit(pooled[ok], y_img[ok, j])
        print(f"logreg 32x32 pixels      {name:14s} AUROC {_auc(y_img[te, j], lr.predict_proba(pooled[te])[:, 1]):.3f}")
    t = time.perf_counter()
    p_img = _cnn(imgs[tr], y_img[tr], imgs, args.epochs, args.seed)  # (N, 2)
    for j, name in enumerate(IMAGE):
        print(f"tiny CNN ({args.epochs} ep)         {name:14s} AUROC {_auc(y_img[te, j], p_img[te, j]):.3f}")
    print(f"(tiny CNN trained in {time.perf_counter() - t:.1f} s)")

    p_txt = _text(rows, notes, split, has_note)

    both = (split == "test") & has_img & has_note
    y_pn = _labels(rows, "pneumonia")
    print("\n== pneumonia (needs both), test studies with image and note ==")
    print(f"image-only proxy (consolidation prob)  AUROC {_auc(y_pn[both], p_img[both, 1]):.3f}")
    print(f"text-only proxy (fever prob)           AUROC {_auc(y_pn[both], p_txt['fever'][both]):.3f}")
    print(f"fused proxy (product)                  AUROC {_auc(y_pn[both], p_img[both, 1] * p_txt['fever'][both]):.3f}")

    print("\n== trivial baselines (test split) ==")
    res = evaluate_baselines(data / "manifest.csv", split="test")
    for key, value in res.auroc.items():
        print(f"{key:34s} AUROC {value:.3f}  (n={res.n[key]})")


if __name__ == "__main__":
    main()
