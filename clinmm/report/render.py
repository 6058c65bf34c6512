"""Render a :class:`~clinmm.report.validation.ValidationReport` to one self-contained HTML file (and PDF).

Every style and figure is inline (figures as ``data:image/png;base64`` URIs); the page has no script and makes no
network request. The PDF is printed by headless Chromium through the DevTools protocol (``Page.printToPDF``) driven
by Selenium (``pip install clinmm[pdf]``, Debian ``chromium`` + ``chromium-driver``).
"""

from __future__ import annotations

import base64
import logging
import math
import shutil
from pathlib import Path
from typing import Any

import jinja2

from clinmm.errors import ClinmmError
from clinmm.metrics import METRIC_NAMES, THRESHOLD_METRICS
from clinmm.report.checklist import SECTION_ANCHORS, checklists
from clinmm.report.figures import forest_figure, reliability_figure, roc_figure
from clinmm.report.validation import ValidationReport

__all__ = ["render_html_string", "render_html", "print_pdf", "chrome_driver", "CHROMIUM_FLAGS", "ReportRenderError"]

logger = logging.getLogger(__name__)

CHROMIUM_FLAGS: tuple[str, ...] = (
    "--headless=new",
    "--no-sandbox",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-gpu",
)

_METRIC_TITLES = {
    "auroc": "AUROC", "auprc": "AUPRC", "sensitivity": "Sensitivity", "specificity": "Specificity", "ppv": "PPV",
    "npv": "NPV", "f1": "F1",
}


class ReportRenderError(ClinmmError):
    """The report could not be rendered or printed (e.g. Chromium missing for ``--pdf``)."""


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    try:
        v = float(value)
    except (TypeError, ValueError):
        return str(value)
    return "–" if not math.isfinite(v) else f"{v:.{digits}f}"


def _ci(ci: Any, digits: int = 3) -> str:
    if ci is None:
        return "–"
    text = _fmt(ci.value, digits)
    if math.isfinite(ci.lower) and math.isfinite(ci.upper):
        text += f" ({_fmt(ci.lower, digits)}–{_fmt(ci.upper, digits)})"
    return text


def _pvalue(p: Any) -> str:
    if p is None or not math.isfinite(float(p)):
        return "–"
    return "< 0.0001" if p < 1e-4 else f"{p:.4f}"


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("clinmm.report", "templates"),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["fmt"] = _fmt
    env.filters["ci"] = _ci
    env.filters["pvalue"] = _pvalue
    env.filters["pretty"] = lambda k: str(k).replace("_", " ")
    return env


def _flatten(value: Any, prefix: str = "") -> list[tuple[str, str]]:
    """Nested dict -> [(dotted key, text)] for generic key/value tables (model card, faithfulness)."""
    rows: list[tuple[str, str]] = []
    if isinstance(value, dict):
        for k, v in value.items():
            rows.extend(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(value, (list, tuple)) and value and all(isinstance(v, (dict, list)) for v in value):
        for i, v in enumerate(value):
            rows.extend(_flatten(v, f"{prefix}[{i}]"))
    elif isinstance(value, (list, tuple)):
        rows.append((prefix, ", ".join(_fmt(v) if isinstance(v, float) else str(v) for v in value)))
    else:
        rows.append((prefix, _fmt(value) if isinstance(value, float) else str(value)))
    return rows


# Results written before the fill was recorded used "blur".
_FILLS = {"mean": "the image mean", "blur": "a blurred copy",
          "healthy": "the same cells of image-negative training studies"}


def _faithfulness_context(result: dict | None) -> dict | None:
    """Headline table + modality-share correlations + setup line from an ``evaluate_faithfulness`` result."""
    if result is None:
        return None
    from clinmm.explain.faithfulness import summary_rows

    rows = summary_rows(result)
    share = [(label, mod, v.get("spearman"), v.get("n")) for label, d in result.get("modality_share", {}).items()
             for mod, v in d.items()]
    setup = (f"{result.get('n_studies', '?')} studies of the {result.get('split', '?')} split, "
             f"{result.get('n_random', '?')} random orders per deletion baseline, removed image cells filled with "
             f"{_FILLS.get(result.get('deletion_fill', 'blur'), '?')}, ground truth "
             f"{'used' if result.get('ground_truth') else 'absent (pointing games not computed)'}")
    return {"rows": rows, "share": share, "setup": setup}


def render_html_string(report: ValidationReport) -> str:
    """The report as one HTML document (str)."""
    card = dict(report.model_card)
    intended = card.pop("intended_use", None)
    context = {
        "r": report,
        "metrics": METRIC_NAMES,
        "threshold_metrics": THRESHOLD_METRICS,
        "metric_titles": _METRIC_TITLES,
        "sections": SECTION_ANCHORS,
        "checklists": checklists(),
        "intended_use": intended,
        "card_rows": _flatten(card),
        "faith": _faithfulness_context(report.faithfulness),
        "flow": report.ingestion_flow,
        "fig_roc": roc_figure(report),
        "fig_reliability": reliability_figure(report),
        "fig_forest": forest_figure(report),
        "cls_rows": [(k, v) for k, v in report.classification_report.items() if isinstance(v, dict)],
    }
    return _environment().get_template("report.html.j2").render(**context)


def render_html(report: ValidationReport, out: str | Path) -> Path:
    """Write the HTML report atomically (temp file + rename) and return its path."""
    out = Path(out)
    html = render_html_string(report)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(out)
    logger.info("report HTML: %s (%.1f kB)", out, out.stat().st_size / 1024)
    return out


def chrome_driver(*, chromium: str | None = None, chromedriver: str | None = None, extra_args: tuple[str, ...] = (),
                  performance_log: bool = False):
    """A Selenium headless Chromium with :data:`CHROMIUM_FLAGS` (``performance_log``: record CDP Network events)."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as err:  # pragma: no cover - depends on the install
        raise ReportRenderError("--pdf needs selenium: pip install 'clinmm[pdf]'") from err
    binary = chromium or shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver_path = chromedriver or shutil.which("chromedriver")
    if not binary or not driver_path:
        raise ReportRenderError(
            f"--pdf needs Chromium and chromedriver on PATH (found chromium={binary}, chromedriver={driver_path}); "
            "on Debian: apt-get install chromium chromium-driver"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in CHROMIUM_FLAGS + tuple(extra_args):
        options.add_argument(flag)
    if performance_log:
        options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=driver_path), options=options)


def print_pdf(html: str | Path, out: str | Path, *, chromium: str | None = None,
              chromedriver: str | None = None) -> Path:
    """Print an HTML file to PDF with headless Chromium (CDP ``Page.printToPDF``, A4, backgrounds on).

    Args:
        html: the report HTML file.
        out: PDF path to write.
        chromium: Chromium binary (default: found on PATH).
        chromedriver: chromedriver binary (default: found on PATH).
    """
    html, out = Path(html).resolve(), Path(out)
    driver = chrome_driver(chromium=chromium, chromedriver=chromedriver)
    try:
        driver.get(html.as_uri())
        result = driver.execute_cdp_cmd("Page.printToPDF", {
            "printBackground": True, "paperWidth": 8.27, "paperHeight": 11.69, "preferCSSPageSize": False,
            "marginTop": 0.4, "marginBottom": 0.4, "marginLeft": 0.4, "marginRight": 0.4,
        })
    finally:
        driver.quit()
    out.write_bytes(base64.b64decode(result["data"]))
    logger.info("report PDF: %s", out)
    return out
