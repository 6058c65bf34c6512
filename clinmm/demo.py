"""The end-to-end demo behind ``make demo``: sample data → train → score → report → dashboard.

Each step is skipped when its output already exists and is up to date (same seed / study count / configuration),
so a second run reuses the data, the checkpoint, the scores and the report and goes straight to the dashboard.
Per-step wall times are logged and written to ``runs/demo/timings.json``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["DemoPaths", "run_demo"]

logger = logging.getLogger(__name__)
FAITHFULNESS_STUDIES = 24  # test studies the demo measures explanation faithfulness on (about 1 min on 2 CPU cores)


@dataclass
class DemoPaths:
    """Where the demo writes (all git-ignored)."""

    root: Path

    @property
    def data(self) -> Path:
        return self.root / "sample_data" / "demo"

    @property
    def run(self) -> Path:
        return self.root / "runs" / "demo"

    @property
    def checkpoint(self) -> Path:
        return self.run / "checkpoint"

    @property
    def scores(self) -> Path:
        return self.run / "scores"

    @property
    def report(self) -> Path:
        return self.run / "report.html"

    @property
    def faithfulness(self) -> Path:
        return self.run / "faithfulness.json"


@dataclass
class _Timer:
    seconds: dict = field(default_factory=dict)

    def step(self, name: str):
        timer = self

        class _Ctx:
            def __enter__(self):
                self.t = time.perf_counter()
                logger.info("demo: %s ...", name)

            def __exit__(self, *exc):
                timer.seconds[name] = round(time.perf_counter() - self.t, 1)
                logger.info("demo: %s done in %.1fs", name, timer.seconds[name])

        return _Ctx()


def _stamp(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


def run_demo(root: str | Path, *, studies: int = 1000, seed: int = 0, serve: bool = True,
             port: int = 8501) -> dict:
    """Run (or reuse) every stage of the demo under ``root``; serve the dashboard at the end when ``serve``.

    Returns:
        per-step wall times in seconds (reused steps are reported as ``"reused"``).
    """
    from clinmm.config import config_to_dict, demo_config

    paths = DemoPaths(Path(root).resolve())
    timer = _Timer()
    paths.run.mkdir(parents=True, exist_ok=True)

    from clinmm.data.synthetic import GENERATOR_VERSION

    data_key = {"studies": studies, "seed": seed, "generator": GENERATOR_VERSION}
    if _stamp(paths.data / ".demo-stamp.json") == data_key and (paths.data / "manifest.csv").is_file():
        timer.seconds["data"] = "reused"
    else:
        from clinmm.data.synthetic import generate_sample_data

        with timer.step("data"):
            generate_sample_data(paths.data, studies=studies, seed=seed, overwrite=True,
                                 workers=min(4, os.cpu_count() or 1))
        (paths.data / ".demo-stamp.json").write_text(json.dumps(data_key))

    config = demo_config()
    # A guard against a stalled machine, not a budget: 40 epochs take about 6 minutes on 2 idle cores. The demo model
    # should not depend on machine speed, so a healthy run never reaches it (a warning says when one does).
    config.train.max_train_seconds = 1200.0
    train_key = {"data": data_key, "config": config_to_dict(config)}
    train_hash = hashlib.sha256(json.dumps(train_key, sort_keys=True).encode()).hexdigest()
    if (_stamp(paths.run / ".train-stamp.json").get("hash") == train_hash
            and (paths.checkpoint / "manifest.json").is_file()):
        timer.seconds["train"] = "reused"
    else:
        from clinmm.train import train

        with timer.step("train"):
            result = train(paths.data / "manifest.csv", paths.checkpoint, config=config)
        logger.info("demo: validation macro AUROC %.3f (epoch %d)", result.val_macro_auroc, result.best_epoch)
        (paths.run / ".train-stamp.json").write_text(json.dumps({"hash": train_hash}))
        for stale in (paths.run / ".score-stamp.json", paths.run / ".report-stamp.json"):
            stale.unlink(missing_ok=True)

    from clinmm.score import ScoreOptions, score

    with timer.step("score"):
        summary = score(paths.data / "manifest.csv", paths.checkpoint, paths.scores,  # the held-out studies only
                        options=ScoreOptions(workers=2, salt_file=paths.run / "salt", split="test"))
    logger.info("demo: scored %s", summary.as_dict())

    if _stamp(paths.run / ".report-stamp.json").get("hash") == train_hash and paths.report.is_file():
        timer.seconds["faithfulness"] = timer.seconds["report"] = "reused"
    else:
        from clinmm.explain.faithfulness import evaluate_faithfulness
        from clinmm.report.validation import build_report

        with timer.step("faithfulness"):  # the dashboard's explanation, measured on held-out studies for the report
            faith = evaluate_faithfulness(paths.checkpoint, paths.data / "manifest.csv", split="test",
                                          methods=("attention",), max_studies=FAITHFULNESS_STUDIES, insertion=False,
                                          max_steps=8)
            paths.faithfulness.write_text(json.dumps(faith, indent=1, allow_nan=False) + "\n", encoding="utf-8")
        with timer.step("report"):
            build_report(paths.checkpoint, paths.data / "manifest.csv", split="test", out=paths.report,
                         faithfulness=paths.faithfulness)
        (paths.run / ".report-stamp.json").write_text(json.dumps({"hash": train_hash}))

    (paths.run / "timings.json").write_text(json.dumps(timer.seconds, indent=2))
    logger.info("demo: timings %s", timer.seconds)
    if serve:
        from clinmm.dashboard_launch import launch

        logger.info("demo: serving the dashboard on http://localhost:%d (Ctrl-C to stop)", port)
        launch(scores=paths.scores, model=paths.checkpoint, report=paths.report, manifest=paths.data / "manifest.csv",
               db_url=f"sqlite:///{paths.run / 'feedback.sqlite'}", address="127.0.0.1", port=port, identified=False)
    return timer.seconds
