"""The ``clinmm`` command line: thin Typer commands that parse, lazy-import and call one library function.

This module (and the dashboard) are the only places that read argv or environment variables.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Annotated, Optional

import typer

__all__ = ["app"]

app = typer.Typer(
    name="clinmm",
    help="Multimodal (DICOM image + clinical note) diagnosis: sample data, train, score, explain, report, dashboard.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Load real public data sets into clinmm manifests.", no_args_is_help=True)
app.add_typer(data_app, name="data")


def _setup(verbose: bool = False) -> None:
    """Logging to stderr; offline Hugging Face (clinmm never downloads weights)."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _config(path: Path | None, *, demo: bool):
    """A command's configuration: the YAML file ``path`` over the CPU demo configuration or the defaults."""
    from clinmm.config import ClinmmConfig, demo_config, load_config

    base = demo_config() if demo else ClinmmConfig()
    return load_config(path, base=base) if path else base


@app.command()
def info(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Versions, device, available DICOM decoders and where the default text model lives."""
    _setup()
    from clinmm.info import collect_info, format_info

    data = collect_info()
    typer.echo(json.dumps(data, indent=2) if as_json else format_info(data))


@app.command()
def train(
    manifest: Annotated[Path, typer.Option(help="Manifest CSV/Parquet (DESIGN.md schema).")],
    out: Annotated[Path, typer.Option(help="Checkpoint directory to write.")],
    config: Annotated[Optional[Path], typer.Option(help="YAML config; overrides the defaults.")] = None,
    demo: Annotated[bool, typer.Option(help="Start from the CPU demo configuration.")] = False,
    fusion: Annotated[Optional[str], typer.Option(help="Override fusion.method.")] = None,
    epochs: Annotated[Optional[int], typer.Option(help="Override train.epochs.")] = None,
    device: Annotated[Optional[str], typer.Option(help="Override train.device (auto, cpu, cuda).")] = None,
    resume: Annotated[bool, typer.Option(help="Continue from OUT/.train_state (saved every epoch).")] = False,
    init_from: Annotated[Optional[Path], typer.Option(help="A `clinmm pretrain-contrastive` output to start "
                                                           "the encoders from.")] = None,
    text_lora: Annotated[bool, typer.Option(help="Fine-tune the text encoder with LoRA adapters (peft).")] = False,
    progress: Annotated[bool, typer.Option(help="Progress bar on stderr.")] = True,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Train a fused image + note model and write a self-describing checkpoint directory.

    Multi-GPU / multi-process: `torchrun --nproc_per_node N $(which clinmm) train ...` (DDP; gloo on CPU).
    """
    _setup(verbose)
    from clinmm.errors import ClinmmError
    from clinmm.train import train as train_model
    from clinmm.training.ddp import DistContext

    # torchrun's environment (read here, never in the library)
    dist = DistContext(rank=int(os.environ.get("RANK", "0")), world_size=int(os.environ.get("WORLD_SIZE", "1")),
                       local_rank=int(os.environ.get("LOCAL_RANK", "0")))

    try:
        cfg = _config(config, demo=demo)
        if fusion:
            cfg.fusion.method = fusion  # type: ignore[assignment]
        if epochs is not None:
            cfg.train.epochs = epochs
        if device:
            cfg.train.device = device
        if text_lora:
            cfg.text.lora = True
        result = train_model(manifest, out, config=cfg, resume=resume, init_from=init_from, dist=dist,
                             progress=progress)
    except ClinmmError as err:
        _fail(str(err))
    typer.echo(json.dumps(result.summary(), indent=2))


@app.command()
def score(
    input: Annotated[Path, typer.Argument(help="Folder tree of DICOM files, or a manifest CSV/Parquet.")],
    model: Annotated[Path, typer.Option(help="Checkpoint directory.")],
    out: Annotated[Path, typer.Option(help="Output folder (resumable).")],
    notes: Annotated[Optional[Path], typer.Option(help="Notes CSV keyed by study UID or accession number.")] = None,
    explain: Annotated[bool, typer.Option(help="Write explanations/ per study.")] = False,
    sr: Annotated[bool, typer.Option(help="Write one DICOM Comprehensive SR (TID 1500) per study.")] = False,
    engine: Annotated[str, typer.Option(help="local or ray.")] = "local",
    batch_size: Annotated[Optional[int], typer.Option(help="Studies per model batch.")] = None,
    workers: Annotated[Optional[int], typer.Option(help="Decode worker processes.")] = None,
    device: Annotated[Optional[str], typer.Option(help="auto, cpu, cuda, cuda:N.")] = None,
    force_scope: Annotated[bool, typer.Option(help="Also score studies outside the model's scope.")] = False,
    shard_size: Annotated[Optional[int], typer.Option(help="Studies per output shard (resume granularity).")] = None,
    salt_file: Annotated[Optional[Path],
                         typer.Option(help="Secret salt for study keys (env CLINMM_SALT_FILE).")] = None,
    split: Annotated[Optional[str],
                     typer.Option(help="Manifest INPUT only: score just this split (e.g. test).")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Batch-score DICOM studies. Exit 0: all ok; 3: some file/study not ok (see errors.csv); 2: usage error."""
    _setup(verbose)
    from clinmm.errors import ClinmmError
    from clinmm.score import ScoreOptions, score as run_score

    salt = salt_file or (Path(os.environ["CLINMM_SALT_FILE"]) if os.environ.get("CLINMM_SALT_FILE") else None)
    try:
        options = ScoreOptions(
            notes=notes, explain=explain, sr=sr, engine=engine, batch_size=batch_size, workers=workers,
            device=device, force_scope=force_scope, salt_file=salt, progress=True, shard_size=shard_size,
            ray_address=os.environ.get("RAY_ADDRESS") or None, split=split,
            command=" ".join(["clinmm", *__import__("sys").argv[1:]]),
        )
        summary = run_score(input, model, out, options=options)
    except ClinmmError as err:
        _fail(str(err))
    typer.echo(json.dumps(summary.as_dict(), indent=2))
    raise typer.Exit(summary.exit_code)


@app.command()
def report(
    model: Annotated[Path, typer.Option(help="Checkpoint directory.")],
    manifest: Annotated[Path, typer.Option(help="Labelled manifest.")],
    out: Annotated[Path, typer.Option(help="HTML file to write.")],
    split: Annotated[str, typer.Option(help="Manifest split to evaluate.")] = "test",
    compare: Annotated[Optional[list[Path]], typer.Option(help="Other checkpoints to compare (DeLong).")] = None,
    pdf: Annotated[bool, typer.Option(help="Also print a PDF through headless Chromium.")] = False,
    n_boot: Annotated[int, typer.Option(help="Bootstrap replicates.")] = 2000,
    faithfulness: Annotated[Optional[Path], typer.Option(help="Faithfulness JSON (evaluate_faithfulness).")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Write a self-contained HTML validation report for a checkpoint on a labelled split."""
    _setup(verbose)
    from clinmm.errors import ClinmmError
    from clinmm.report.validation import build_report

    try:
        path = build_report(model, manifest, split=split, out=out, compare=tuple(compare or ()), pdf=pdf,
                            n_boot=n_boot, faithfulness=faithfulness)
    except ClinmmError as err:
        _fail(str(err))
    typer.echo(str(path))


@app.command()
def faithfulness(
    model: Annotated[Path, typer.Option(help="Checkpoint directory.")],
    manifest: Annotated[Path, typer.Option(help="Labelled manifest (with ground_truth/ beside it for pointing "
                                                "games; without it only deletion and modality share).")],
    out: Annotated[Path, typer.Option(help="JSON file to write (pass it to `clinmm report --faithfulness`).")],
    split: Annotated[str, typer.Option(help="Manifest split to evaluate.")] = "test",
    method: Annotated[Optional[list[str]], typer.Option(help="attention (default), raw_attention, gradcam, "
                                                            "gradcam++, hirescam, integrated_gradients; "
                                                            "repeatable.")] = None,
    max_studies: Annotated[Optional[int], typer.Option(help="Only the first N studies of the split.")] = None,
    max_steps: Annotated[int, typer.Option(help="Deletion steps per curve.")] = 16,
    n_random: Annotated[int, typer.Option(help="Random orders per deletion baseline.")] = 10,
    insertion: Annotated[bool, typer.Option(help="Also compute insertion curves.")] = False,
    deletion_fill: Annotated[str, typer.Option(help="What a removed image cell shows: mean (of the image content), "
                                                    "blur, or healthy (the same cells of image-negative training "
                                                    "studies, probability averaged over them).")] = "healthy",
    healthy_donors: Annotated[int, typer.Option(help="Healthy donor images per study with --deletion-fill healthy.")
                              ] = 3,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Measure explanation faithfulness: pointing games, negation check, deletion vs random, modality share."""
    _setup(verbose)
    from clinmm.errors import ClinmmError
    from clinmm.explain.faithfulness import evaluate_faithfulness

    try:
        result = evaluate_faithfulness(model, manifest, split=split, methods=tuple(method or ("attention",)),
                                       max_studies=max_studies, max_steps=max_steps, n_random=n_random,
                                       insertion=insertion, deletion_fill=deletion_fill, n_donors=healthy_donors)
    except (ClinmmError, ValueError, OSError) as err:
        _fail(str(err))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    typer.echo(str(out))


@app.command()
def explain(
    model: Annotated[Path, typer.Option(help="Checkpoint directory.")],
    out: Annotated[Path, typer.Option(help="Output folder (PNG per label, note.html, explanation.json).")],
    study: Annotated[Optional[Path], typer.Argument(help="DICOM file or series folder (omit for a note only).")] = None,
    note: Annotated[Optional[Path], typer.Option(help="Text file with the study's clinical note.")] = None,
    method: Annotated[Optional[list[str]], typer.Option(help="attention (default), gradcam, gradcam++, "
                                                            "hirescam, integrated_gradients; repeatable.")] = None,
    device: Annotated[Optional[str], typer.Option(help="auto, cpu, cuda.")] = "auto",
    force_scope: Annotated[bool, typer.Option(help="Explain a study outside the model's scope anyway.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Explain one study: heatmap overlay per label, the note with highlighted words, and the numbers as JSON.

    A study outside the model's scope (modality, view, body part) is refused unless --force-scope; one unlike the
    training images (intensities, pixel grid) is explained with a warning, recorded in the JSON's study_check."""
    _setup(verbose)
    from clinmm.errors import ClinmmError
    from clinmm.explain.run import explain_study

    try:
        text = note.read_text(encoding="utf-8") if note else None
        result = explain_study(model, study, note=text, out=out, methods=tuple(method or ("attention",)), device=device,
                               force_scope=force_scope)
    except (ClinmmError, ValueError, OSError) as err:
        _fail(str(err))
    typer.echo(json.dumps({"out": str(result.out), "files": result.files,
                           "study_check": result.check.to_dict() if result.check else None}, indent=2))


@app.command()
def dashboard(
    scores: Annotated[Optional[Path], typer.Option(help="A `clinmm score` output folder.")] = None,
    model: Annotated[Optional[Path], typer.Option(help="Checkpoint directory (case view, model card).")] = None,
    report_html: Annotated[Optional[Path], typer.Option("--report", help="Validation report HTML.")] = None,
    db: Annotated[Optional[str], typer.Option(help="Feedback SQLAlchemy URL (env CLINMM_FEEDBACK_DB).")] = None,
    address: Annotated[str, typer.Option(help="Bind address (localhost by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8501,
    identified: Annotated[bool, typer.Option(help="Identified mode (only behind sign-in).")] = False,
    manifest: Annotated[Optional[Path], typer.Option(help="Manifest the scores came from.")] = None,
    proxy_user_header: Annotated[Optional[str], typer.Option(help="Auth proxy user header.")] = None,
    max_upload_mb: Annotated[int, typer.Option(help="Upload size limit in MB.")] = 200,
) -> None:
    """Serve the clinician dashboard (Streamlit) on localhost."""
    _setup()
    from clinmm.dashboard_launch import launch
    from clinmm.errors import ClinmmError

    try:
        code = launch(scores=scores, model=model, report=report_html, db_url=db or os.environ.get("CLINMM_FEEDBACK_DB"),
                      address=address, port=port, identified=identified, manifest=manifest,
                      proxy_user_header=proxy_user_header, max_upload_mb=max_upload_mb)
    except ClinmmError as err:
        _fail(str(err))
    raise typer.Exit(code)


@data_app.command("indiana")
def data_indiana(
    out: Annotated[Path, typer.Option(help="Output folder for manifest.csv (keep it out of git: CC BY-NC-ND).")],
    archive: Annotated[Optional[Path],
                       typer.Option(help="NLMCXR_reports.tgz (default: inside torchxrayvision).")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Indiana University chest X-ray reports (from the torchxrayvision wheel) → manifest with 12 MeSH labels."""
    _setup(verbose)
    from clinmm.data.indiana import IndianaDataError, write_indiana_manifest

    try:
        path = write_indiana_manifest(out, archive=archive)
    except IndianaDataError as err:
        _fail(str(err))
    typer.echo(str(path))


@app.command("pretrain-text")
def pretrain_text(
    notes: Annotated[Path, typer.Option(help="CSV of notes (e.g. a manifest).")],
    out: Annotated[Path, typer.Option(help="Output directory: a text encoder usable as text.path.")],
    column: Annotated[
        Optional[list[str]], typer.Option(help="Text column(s), joined per row (default: note_text).")
    ] = None,
    base: Annotated[Optional[Path], typer.Option(help="Starting encoder directory (default: packaged MiniLM).")] = None,
    epochs: Annotated[int, typer.Option(help="Passes over the notes.")] = 1,
    max_length: Annotated[int, typer.Option(help="Tokens per training window.")] = 128,
    batch_size: Annotated[int, typer.Option(help="Windows per step.")] = 16,
    lr: Annotated[float, typer.Option(help="Learning rate.")] = 5e-5,
    max_seconds: Annotated[float, typer.Option(help="Stop after this many seconds (0 = no limit).")] = 0.0,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:N.")] = "cpu",
    seed: Annotated[int, typer.Option(help="Seed (held-out split, masking, order).")] = 0,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Masked-language-model domain pretraining of the text encoder on a notes corpus (held-out loss reported)."""
    _setup(verbose)
    from clinmm.errors import ClinmmError
    from clinmm.text.pretrain import pretrain_from_csv

    try:
        result = pretrain_from_csv(notes, out, columns=column or ["note_text"], base_path=base, epochs=epochs,
                                   max_length=max_length, batch_size=batch_size, lr=lr, max_seconds=max_seconds,
                                   device=device, seed=seed)
    except (ClinmmError, ValueError) as err:
        _fail(str(err))
    typer.echo(json.dumps(result.__dict__, indent=2))


@app.command("sample-data")
def sample_data(
    out: Annotated[Path, typer.Argument(help="Output folder (must be empty unless --overwrite).")],
    studies: Annotated[int, typer.Option(help="Number of studies.")] = 1000,
    seed: Annotated[int, typer.Option(help="Random seed (same seed on one machine → byte-identical files).")] = 0,
    image_size: Annotated[int, typer.Option(help="Radiograph side / CT slice size in pixels.")] = 256,
    overwrite: Annotated[bool, typer.Option(help="Replace a previously generated set in OUT.")] = False,
    workers: Annotated[int, typer.Option(help="Processes writing patients in parallel (same files for any number)."
                                         )] = 0,
    val_wording: Annotated[str, typer.Option(help="Validation notes in wording of their own ('unseen') or in the "
                                             "training wording ('training', as generator version 4).")] = "unseen",
) -> None:
    """Generate the synthetic paired DICOM + note data set (manifest, notes, DICOM, ground truth)."""
    _setup()
    from clinmm.data.synthetic import SyntheticOptions, generate_sample_data

    try:
        options = SyntheticOptions(image_size=image_size, val_wording=val_wording)  # type: ignore[arg-type]
        summary = generate_sample_data(out, studies=studies, seed=seed, options=options,
                                       overwrite=overwrite, workers=workers)
    except (ValueError, FileExistsError) as err:
        _fail(str(err))
    typer.echo(json.dumps(summary.as_dict(), indent=2))


@app.command()
def demo(
    root: Annotated[Path,
                    typer.Option(help="Folder holding sample_data/ and runs/ (the repository root).")] = Path("."),
    studies: Annotated[int, typer.Option(help="Synthetic studies to generate.")] = 1000,
    seed: Annotated[int, typer.Option(help="Generator seed.")] = 0,
    serve: Annotated[bool, typer.Option("--serve/--no-serve", help="Serve the dashboard at the end.")] = True,
    port: Annotated[int, typer.Option(help="Dashboard port.")] = 8501,
) -> None:
    """Sample data → train → score → report → dashboard on localhost (each step reused when up to date)."""
    _setup()
    from clinmm.demo import run_demo
    from clinmm.errors import ClinmmError

    try:
        timings = run_demo(root, studies=studies, seed=seed, serve=serve, port=port)
    except ClinmmError as err:
        _fail(str(err))
    typer.echo(json.dumps(timings, indent=2))


@app.command()
def inspect(
    path: Annotated[Path, typer.Argument(help="DICOM file or folder (any nesting, files without extension).")],
    out: Annotated[Optional[Path], typer.Option(help="CSV: one de-identified row per file.")] = None,
    workers: Annotated[Optional[int], typer.Option(help="Decode worker processes (default: CPUs, at most 8).")] = None,
    deadline: Annotated[float, typer.Option(help="Seconds per file before its worker is killed.")] = 60.0,
    salt_file: Annotated[Optional[Path],
                         typer.Option(help="Secret salt for study keys (env CLINMM_SALT_FILE).")] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Progress bar on stderr.")] = True,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Give every file a status (ok, not_dicom, no_decoder, ...) and print the counts; --out writes the rows."""
    _setup(verbose)
    from clinmm.io.inspect import run_inspect

    salt = salt_file or (Path(os.environ["CLINMM_SALT_FILE"]) if os.environ.get("CLINMM_SALT_FILE") else None)
    summary = run_inspect(path, out_csv=out, workers=workers, deadline_s=deadline, salt_file=salt, progress=progress)
    typer.echo(summary.format())


@app.command("pretrain-contrastive")
def pretrain_contrastive(
    manifest: Annotated[Path, typer.Option(help="Manifest with paired studies (train: pretraining, test: recall).")],
    out: Annotated[Path, typer.Option(help="Output directory (use it with `clinmm train --init-from`).")],
    config: Annotated[Optional[Path], typer.Option(help="YAML config; overrides the defaults.")] = None,
    demo: Annotated[bool, typer.Option(help="Start from the CPU demo configuration.")] = False,
    epochs: Annotated[int, typer.Option(help="Passes over the paired training studies.")] = 5,
    text_lora: Annotated[bool, typer.Option(help="Train the text encoder through LoRA adapters (peft).")] = False,
    max_train: Annotated[Optional[int], typer.Option(help="Use only the first N training studies.")] = None,
    device: Annotated[Optional[str], typer.Option(help="Override train.device.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """CLIP-style image-note contrastive pretraining (InfoNCE); prints retrieval recall@K before and after."""
    _setup(verbose)
    from clinmm.contrastive import pretrain_contrastive as run
    from clinmm.errors import ClinmmError

    try:
        cfg = _config(config, demo=demo)
        if device:
            cfg.train.device = device
        result = run(manifest, out, config=cfg, epochs=epochs, text_lora=text_lora, max_train=max_train)
    except (ClinmmError, ValueError) as err:
        _fail(str(err))
    typer.echo(json.dumps(result.as_dict(), indent=2))


@app.command()
def compare(
    manifest: Annotated[Path, typer.Option(help="Manifest with train / val / test splits.")],
    out: Annotated[Path, typer.Option(help="Folder for results.json, ablation.md and test predictions.")],
    config: Annotated[Optional[Path], typer.Option(help="YAML config; overrides the defaults.")] = None,
    demo: Annotated[bool, typer.Option(help="Start from the CPU demo configuration.")] = False,
    methods: Annotated[str, typer.Option(help="Comma-separated fusion methods.")] =
        "cross_attention,concat,gated,image_only,text_only",
    epochs: Annotated[Optional[int], typer.Option(help="Override train.epochs (the shared budget).")] = None,
    max_train: Annotated[Optional[int], typer.Option(help="Use only the first N training studies.")] = None,
    max_val: Annotated[Optional[int], typer.Option(help="Use only the first N validation studies.")] = None,
    fine_tune_text: Annotated[bool, typer.Option(help="Fine-tune the text encoder as configured instead of "
                                                      "freezing it and caching its features.")] = False,
    init_from: Annotated[Optional[Path], typer.Option(help="`pretrain-contrastive` output to start from.")] = None,
    n_boot: Annotated[int, typer.Option(help="Bootstrap replicates.")] = 2000,
    seeds: Annotated[Optional[str], typer.Option(
        help="Comma-separated training seeds: one run per seed in OUT/seed_<s> (a finished seed is kept), then "
             "the checks on the seed-mean AUROC in OUT/pooled.md.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Fusion ablation: every method on the same split and budget; test AUROC, paired bootstrap, missing modality."""
    _setup(verbose)
    from clinmm.compare import compare as run
    from clinmm.compare_pool import compare_over_seeds
    from clinmm.errors import ClinmmError

    try:
        cfg = _config(config, demo=demo)
        if epochs is not None:
            cfg.train.epochs = epochs
        chosen = tuple(m.strip() for m in methods.split(",") if m.strip())
        kwargs = dict(cache_text=not fine_tune_text, max_train=max_train, max_val=max_val, init_from=init_from,
                      n_boot=n_boot)
        if seeds is not None:
            try:
                seed_list = [int(s) for s in seeds.split(",") if s.strip()]
            except ValueError:
                _fail(f"--seeds: expected comma-separated integers, got {seeds!r}")
            pooled = compare_over_seeds(manifest, out, config=cfg, seeds=seed_list, methods=chosen, **kwargs)
            if pooled is None:
                typer.echo(f"ran {', '.join(chosen)} for seeds {seeds} in {out}/seed_<s>; pool them with runs of "
                           "the other methods: clinmm compare-pool")
                return
            typer.echo((out / "pooled.md").read_text(encoding="utf-8"))
            typer.echo(json.dumps(pooled.checks, indent=2, default=float))
            return
        result = run(manifest, out, config=cfg, methods=chosen, **kwargs)
    except ClinmmError as err:
        _fail(str(err))
    typer.echo((out / "ablation.md").read_text(encoding="utf-8"))
    typer.echo(json.dumps(result.checks, indent=2, default=float))


@app.command("compare-pool")
def compare_pool(
    runs: Annotated[list[Path], typer.Argument(help="`clinmm compare` output folders (different seeds, same "
                                                    "test studies; a seed may span several folders).")],
    out: Annotated[Path, typer.Option(help="Folder for pooled.json and pooled.md.")],
    n_boot: Annotated[int, typer.Option(help="Bootstrap replicates.")] = 2000,
    skip: Annotated[Optional[list[str]], typer.Option(
        help="FOLDER:METHOD to leave out (repeatable), e.g. a folder's own fused model.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Pool fusion-ablation runs made with different training seeds: seed-mean AUROC ± sd and the checks on it."""
    _setup(verbose)
    from clinmm.compare_pool import pool_compare_runs
    from clinmm.errors import ClinmmError

    try:
        pooled = pool_compare_runs(runs, out, n_boot=n_boot, skip=skip or ())
    except ClinmmError as err:
        _fail(str(err))
    typer.echo((out / "pooled.md").read_text(encoding="utf-8"))
    typer.echo(json.dumps(pooled.checks, indent=2, default=float))


def main() -> None:  # pragma: no cover - console entry point convenience
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
