"""The rendered HTML: self-contained, every checklist item linked to an existing anchor or explained, escaping."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest

from clinmm.report.checklist import CLAIM, SECTION_ANCHORS, TRIPOD_AI
from clinmm.report.render import render_html, render_html_string
from clinmm.report.validation import compute_validation_report

from .conftest import toy_arrays


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.hrefs: list[str] = []
        self.srcs: list[str] = []
        self.tags: list[str] = []
        self.check_links: list[str] = []
        self.check_na = 0
        self._in_na = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        if "id" in a:
            self.ids.add(a["id"])
        if "href" in a:
            self.hrefs.append(a["href"])
            if a.get("class") == "check-link":
                self.check_links.append(a["href"])
        if "src" in a:
            self.srcs.append(a["src"])
        if a.get("class") == "check-na":
            self.check_na += 1


@pytest.fixture(scope="module")
def parsed(toy_report):
    html = render_html_string(toy_report)
    p = _Collect()
    p.feed(html)
    return html, p


def test_every_checklist_item_links_to_an_existing_anchor_or_says_why(parsed):
    html, p = parsed
    items = TRIPOD_AI + CLAIM
    assert len(TRIPOD_AI) >= 27 and len(CLAIM) == 42
    assert len(p.check_links) + p.check_na == len(items)
    for href in p.check_links:
        assert href.startswith("#") and href[1:] in p.ids, href
    for item in items:
        assert (item.anchor in SECTION_ANCHORS) if item.anchor else len(item.reason) > 20, item
    for href in p.hrefs:  # the table of contents too
        assert href.startswith("#") and href[1:] in p.ids, href
    assert set(SECTION_ANCHORS) <= p.ids


def test_html_is_self_contained(parsed, tmp_path, toy_report):
    html, p = parsed
    assert "script" not in p.tags and "link" not in p.tags and "iframe" not in p.tags
    assert all(src.startswith("data:image/png;base64,") for src in p.srcs)
    assert len(p.srcs) >= 4  # ROC, reliability, forest, one gallery thumbnail
    assert not re.search(r"(?:src|href)\s*=\s*[\"']?(?:https?:|//)", html, re.IGNORECASE)
    assert "url(" not in html and "@import" not in html
    out = render_html(toy_report, tmp_path / "report.html")
    assert out.stat().st_size < 10 * 1024 * 1024


def test_sections_show_the_numbers(parsed, toy_report):
    html, _ = parsed
    auroc = toy_report.per_label[0].metrics["auroc"]
    assert f"{auroc.value:.3f} ({auroc.lower:.3f}–{auroc.upper:.3f})" in html
    # faithfulness: the headline table with targets, met / not met and "no cases" where there were none
    assert "17/20 = 85 %" in html and "9/12 = 75 %" in html and "no cases" in html
    assert "fever 9/12" in html and "0.42" in html
    assert "n &lt; 30" in html  # small-group flag (site C)
    assert "no_decoder" in html  # flow by ingestion status
    assert "same model, note removed" in html  # comparator provenance


def test_untrusted_text_is_escaped(parsed):
    html, p = parsed
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_faithfulness_not_computed_is_visible():
    rep = compute_validation_report(**toy_arrays(n=100, seed=3), n_boot=30)
    html = render_html_string(rep)
    assert "Not computed" in html
