"""Pool ``clinmm compare`` runs made with different training seeds: the ablation over a seed budget.

One training seed moves a finding's test AUROC by more than the acceptance margins (on the 4,000-study set the fused
model's dyspnea AUROC was 0.776 with seed 0 and 0.839 with seed 11), so a single run cannot settle a 0.02 criterion.
This module reads the saved test predictions of several runs on the **same test studies** — one or more output folders
per seed, e.g. the fused and text-only models in one folder and the image-only model in another — and reports, per
method and label, the mean and spread of the test AUROC over seeds, and the issue-6 checks on the **seed-mean**
AUROC: fused − best single-modality model (best by seed-mean AUROC), paired patient-level bootstrap with every
replicate resampling the same patients for every model; missing-modality deltas of the seed-mean. Each seed that has
all three of cross_attention, image_only and text_only also gets its own checks, as ``compare`` computes them.

The bootstrap interval is the test sample's uncertainty about the mean over the seeds that were run; the seed spread
is reported beside it (``sd`` and the per-seed values), not folded into it.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from clinmm.compare import acceptance_checks, check_rows, compare
from clinmm.config import ClinmmConfig, config_to_dict
from clinmm.errors import CompareError
from clinmm.metrics import known_auroc

__all__ = ["PooledCompare", "compare_over_seeds", "pool_compare_runs", "render_pooled_markdown"]

logger = logging.getLogger(__name__)

# Configuration keys that may differ between pooled runs: the seed itself, and settings that change only the
# explanations (never a prediction), the device and the number of data-loading workers.
_MAY_DIFFER = {"train.seed", "train.device", "train.num_workers", "fusion.text_relevance_rollout",
               "fusion.image_relevance_game", "fusion.text_relevance_game", "fusion.image_relevance_carry",
               "fusion.image_relevance_carry_subcells", "fusion.image_relevance_carry_permutations",
               "fusion.image_relevance_carry_window"}
# Settings only cross_attention reads: they must agree between the runs of cross_attention, not with the baselines.
_CROSS_ATTENTION_ONLY = {"fusion.heads", "fusion.separate_note_attention", "fusion.note_pool", "fusion.image_pool"}
_MODES = (("full", "test_auroc"), ("no_text", "test_auroc_no_text"), ("no_image", "test_auroc_no_image"))


@dataclass
class PooledCompare:
    """What :func:`pool_compare_runs` measured (``as_dict`` is what ``pooled.json`` holds).

    ``methods[method]``: ``seeds`` (list), ``test_auroc`` / ``test_auroc_no_text`` / ``test_auroc_no_image``
    {label: {"mean", "sd", "per_seed"}}, ``train_seconds`` (per seed). ``checks``: on the seed-mean AUROC.
    ``per_seed_checks[seed]``: that seed's checks where it has all three methods.
    """

    labels: list[str]
    runs: list[str]
    methods: dict[str, dict] = field(default_factory=dict)
    checks: dict[str, dict] = field(default_factory=dict)
    per_seed_checks: dict[str, dict] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"labels": self.labels, "runs": self.runs, "methods": self.methods, "checks": self.checks,
                "per_seed_checks": self.per_seed_checks}


def _flat(d: dict, prefix: str = "") -> dict:
    out: dict = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _load_run(folder: Path) -> tuple[dict, dict[str, dict]]:
    """A compare output folder → (its results.json, {method: predictions npz as a dict})."""
    path = folder / "results.json"
    if not path.is_file():
        raise CompareError(f"{folder}: no results.json (not a `clinmm compare` output folder, or the run has not "
                           "finished its first method)")
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise CompareError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None
    preds = {}
    for method in results.get("methods", {}):
        npz = folder / f"predictions_{method}.npz"
        if not npz.is_file():
            raise CompareError(f"{folder}: results.json lists {method} but {npz.name} is missing")
        with np.load(npz) as z:
            preds[method] = {k: z[k] for k in z.files}
    return results, preds


def _spread(values: list[float]) -> dict:
    v = np.asarray(values, dtype=np.float64)
    return {"mean": float(np.nanmean(v)) if v.size else float("nan"),
            "sd": float(np.nanstd(v, ddof=1)) if v.size > 1 else float("nan"),
            "per_seed": [float(x) for x in v]}


def _means(aurocs: dict) -> dict:
    """{method: {mode key: {label: spread}}} → the same with the seed-mean AUROC only."""
    return {m: {key: {lab: v["mean"] for lab, v in per.items()} for key, per in r.items() if key.startswith("test_")}
            for m, r in aurocs.items()}


def _aurocs(labels: list[str], y: np.ndarray, stacked: dict[str, np.ndarray]) -> dict:
    """{mode key: {label: spread over the seeds}} for one method's (S, n, C) scores per mode."""
    return {key: {lab: _spread([known_auroc(y[:, c], s[:, c]) for s in stacked[mode]])
                  for c, lab in enumerate(labels)} for mode, key in _MODES}


def pool_compare_runs(runs: Sequence[str | Path], out: str | Path | None = None, *, n_boot: int = 2000,
                      seed: int = 0, skip: Sequence[str] = ()) -> PooledCompare:
    """Pool several ``clinmm compare`` output folders (different training seeds, same test studies).

    Args:
        runs: output folders of ``clinmm compare``. A seed may be split over several folders (e.g. its image-only
            model in a run of its own); a (seed, method) pair must appear only once.
        out: folder for ``pooled.json`` and ``pooled.md`` (None: write nothing).
        n_boot: bootstrap replicates.
        seed: bootstrap seed.
        skip: ``"folder:method"`` entries to leave out (e.g. a folder's own fused model, to pool a variant of the
            fused model against that folder's baselines).

    Raises:
        CompareError: a folder is not a finished compare output; the runs were made on different test studies or
            with configurations that differ in more than the seed (settings that change only explanations may
            differ, and settings only cross_attention reads need agree only between its runs); a (seed, method)
            pair appears twice; cross_attention, image_only or text_only has no run.
    """
    folders = [Path(r) for r in runs]
    if not folders:
        raise CompareError("pool_compare_runs: no run folders given")
    skipped = set()
    for entry in skip:
        folder, _, method = str(entry).rpartition(":")
        if Path(folder) not in folders or not method:
            raise CompareError(f"pool_compare_runs: skip {entry!r} is not FOLDER:METHOD with FOLDER among the runs")
        skipped.add(f"{Path(folder)}:{method}")
    by_method: dict[str, dict[int, dict]] = {}
    train_seconds: dict[str, dict[int, float]] = {}
    ref = None  # (folder, labels, y, patient ids, flat config without the cross_attention-only keys)
    ref_method: dict[str, tuple[Path, dict]] = {}  # per method: the first folder and its whole flat config
    # a key added to the configuration after a run was made takes its default there, as loading would give it
    defaults = _flat(config_to_dict(ClinmmConfig()))
    for folder in folders:
        results, preds = _load_run(folder)
        setup = results.get("setup", {})
        run_seed = int(setup.get("seed", setup.get("config", {}).get("train", {}).get("seed", 0)))
        stored = {**defaults, **_flat(setup.get("config", {}))}
        config = {k: v for k, v in stored.items() if k not in _MAY_DIFFER}
        for method, p in preds.items():
            if f"{folder}:{method}" in skipped:
                continue
            shared = {k: v for k, v in config.items() if k not in _CROSS_ATTENTION_ONLY}
            if ref is None:
                ref = (folder, results["labels"], p["y"], p["patient"], shared)
            first, own = ref_method.setdefault(method, (folder, config))
            if results["labels"] != ref[1]:
                raise CompareError(f"{folder}: labels {results['labels']} differ from {ref[0]}'s {ref[1]}")
            if p["y"].shape != ref[2].shape or not np.array_equal(p["y"], ref[2], equal_nan=True) \
                    or not np.array_equal(p["patient"], ref[3]):
                raise CompareError(f"{folder}: {method}'s test studies differ from {ref[0]}'s (the runs must use "
                                   "the same manifest and test split)")
            for other, want, have in ((ref[0], ref[4], shared), (first, own, config)):
                diff = sorted(k for k in set(want) | set(have) if want.get(k) != have.get(k))
                if diff:
                    raise CompareError(f"{folder}: {method}'s configuration differs from {other}'s in more than the "
                                       f"seed: {', '.join(diff[:6])}")
            seen = by_method.setdefault(method, {})
            if run_seed in seen:
                raise CompareError(f"{folder}: {method} with seed {run_seed} is also in {seen[run_seed]['folder']}")
            seen[run_seed] = {"folder": str(folder), **p}
            train_seconds.setdefault(method, {})[run_seed] = results["methods"][method].get("train_seconds")
    missing = [m for m in ("cross_attention", "image_only", "text_only") if m not in by_method]
    if missing:
        raise CompareError(f"pool_compare_runs: no run of {', '.join(missing)} among {[str(f) for f in folders]}")
    _, labels, y, pids, _ = ref
    result = PooledCompare(labels=list(labels), runs=[str(f) for f in folders])
    stacked: dict[str, dict[str, np.ndarray]] = {}
    for method, per_seed in by_method.items():
        seeds = sorted(per_seed)
        stacked[method] = {mode: np.stack([per_seed[s][mode] for s in seeds]) for mode, _ in _MODES}  # (S, n, C)
        result.methods[method] = {"seeds": seeds, **_aurocs(labels, y, stacked[method]),
                                  "train_seconds": [train_seconds[method][s] for s in seeds]}
    result.checks = acceptance_checks(labels, stacked, _means(result.methods), y, pids, n_boot=n_boot, seed=seed)
    trio = ("cross_attention", "image_only", "text_only")
    for s in sorted(set.intersection(*(set(by_method[m]) for m in trio))):
        one = {m: {mode: by_method[m][s][mode][None] for mode, _ in _MODES} for m in trio}  # (1, n, C)
        result.per_seed_checks[str(s)] = acceptance_checks(labels, one, _means({m: _aurocs(labels, y, one[m])
                                                                                for m in trio}),
                                                           y, pids, n_boot=n_boot, seed=seed)
    logger.info("pooled %d runs: %s", len(folders), {m: r["seeds"] for m, r in result.methods.items()})
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "pooled.json").write_text(json.dumps(result.as_dict(), indent=2, default=float), encoding="utf-8")
        (out / "pooled.md").write_text(render_pooled_markdown(result), encoding="utf-8")
    return result


def compare_over_seeds(manifest_path: str | Path, out: str | Path, *, config: ClinmmConfig, seeds: Sequence[int],
                       methods: Sequence[str] = ("cross_attention", "image_only", "text_only"), n_boot: int = 2000,
                       **compare_kwargs) -> PooledCompare | None:
    """Run :func:`clinmm.compare.compare` once per training seed into ``out/seed_<s>/``, then pool them into ``out/``
    when ``methods`` holds cross_attention, image_only and text_only (otherwise return None: pool the seed folders
    with others by :func:`pool_compare_runs`).

    A seed folder whose ``results.json`` already lists every method in ``methods`` is kept as it is (so an
    interrupted run resumes at the first unfinished seed; an unfinished seed is run again whole).

    Args:
        manifest_path, config, methods, n_boot, compare_kwargs: as for :func:`clinmm.compare.compare`
            (``config.train.seed`` is replaced by each seed).
        out: folder for the seed folders, ``pooled.json`` and ``pooled.md``.
        seeds: training seeds (at least one; distinct).
    """
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise CompareError(f"compare_over_seeds: seeds must be distinct and at least one, got {seeds}")
    out = Path(out)
    folders = []
    for s in seeds:
        folder = out / f"seed_{s}"
        folders.append(folder)
        done = folder / "results.json"
        if done.is_file():
            try:
                finished = set(json.loads(done.read_text(encoding="utf-8")).get("methods", {}))
            except json.JSONDecodeError:
                finished = set()
            if set(methods) <= finished:
                logger.info("compare_over_seeds: seed %d already done in %s; kept", s, folder)
                continue
        cfg = copy.deepcopy(config)
        cfg.train.seed = s
        compare(manifest_path, folder, config=cfg, methods=tuple(methods), n_boot=n_boot, **compare_kwargs)
    if not {"cross_attention", "image_only", "text_only"} <= set(methods):
        logger.info("compare_over_seeds: %s only; pool these folders with runs of the other methods "
                    "(clinmm compare-pool)", ", ".join(methods))
        return None
    return pool_compare_runs(folders, out, n_boot=n_boot, seed=0)


def render_pooled_markdown(result: PooledCompare) -> str:
    """Seed-mean AUROC table (± sd, seeds), the checks on the seed means, and each complete seed's checks."""
    labels = result.labels
    lines = ["| method | seeds | " + " | ".join(labels) + " |", "|---|---|" + "---|" * len(labels)]

    def cell(s: dict) -> str:
        return f"{s['mean']:.3f}" + (f" ± {s['sd']:.3f}" if np.isfinite(s["sd"]) else "")

    for method, r in result.methods.items():
        lines.append(f"| {method} | {', '.join(map(str, r['seeds']))} | "
                     + " | ".join(cell(r["test_auroc"][lab]) for lab in labels) + " |")
    fa = result.methods["cross_attention"]
    for key, title in (("test_auroc_no_text", "cross_attention, notes removed"),
                       ("test_auroc_no_image", "cross_attention, images removed")):
        lines.append(f"| {title} | | " + " | ".join(cell(fa[key][lab]) for lab in labels) + " |")
    lines += ["", "Checks on the seed-mean AUROC (± is the sd over seeds; the interval is the test sample's):", "",
              "| check | value | criterion | pass |", "|---|---|---|---|"]
    lines += check_rows(result.checks)
    for s, checks in result.per_seed_checks.items():
        passed = sum(c["pass"] for c in checks.values())
        lines += ["", f"Seed {s} alone: {passed} of {len(checks)} checks pass.", "",
                  "| check | value | criterion | pass |", "|---|---|---|---|"]
        lines += check_rows(checks)
    return "\n".join(lines) + "\n"

