"""The dashboard in a real headless Chromium: worklist → case → heatmap on → feedback → the row is in the database.

Screenshots go to ``$CLINMM_E2E_ARTIFACTS`` (default: the test's temporary folder) and are listed in the output.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from clinmm.feedback.store import FeedbackStore

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MODEL_LOAD_S = 240  # first case view loads the model (MiniLM + DenseNet) on a busy CPU


def _wait_text(driver, text: str, timeout: float) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, timeout).until(ec.presence_of_element_located(
        (By.XPATH, f"//*[contains(normalize-space(text()), {text!r})]")))


def _wait_idle(driver, timeout: float) -> None:
    """Until the script run has finished and the frontend has drawn every element (no skeletons left)."""
    from selenium.webdriver.common.by import By

    deadline = time.time() + timeout
    busy = "[data-testid='stStatusWidget'], [data-testid='stSkeleton']"
    while time.time() < deadline:
        if not driver.find_elements(By.CSS_SELECTOR, busy):
            time.sleep(0.5)
            if not driver.find_elements(By.CSS_SELECTOR, busy):
                return
        time.sleep(0.5)
    raise AssertionError(f"the app did not become idle within {timeout} s")


def _click(driver, xpath: str, timeout: float = 30) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    element = WebDriverWait(driver, timeout).until(ec.element_to_be_clickable((By.XPATH, xpath)))
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", element)
    element.click()


def test_worklist_case_heatmap_feedback(dashboard_server, browser, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    shots = Path(os.environ.get("CLINMM_E2E_ARTIFACTS", tmp_path / "screenshots"))
    shots.mkdir(parents=True, exist_ok=True)
    driver = browser
    driver.get(dashboard_server.url)
    _wait_text(driver, "Worklist", 60)
    _wait_text(driver, "studies match", 60)
    _wait_idle(driver, 60)
    driver.save_screenshot(str(shots / "1_worklist.png"))

    _click(driver, "//button[.//p[normalize-space(text())='Open case']]")
    _wait_text(driver, "Case view", 60)
    _wait_text(driver, "Source: live model", MODEL_LOAD_S)
    _wait_idle(driver, 120)
    assert "/case" in driver.current_url and "study=" in driver.current_url
    images_before = len(driver.find_elements(By.CSS_SELECTOR, "[data-testid='stImage'] img"))
    driver.save_screenshot(str(shots / "2_case.png"))

    _click(driver, "//label[.//p[normalize-space(text())='Heatmap']]")
    _wait_text(driver, "heatmap: nodule", 60)  # the overlay's caption; its colour-bar legend follows it
    _wait_idle(driver, 60)
    assert len(driver.find_elements(By.CSS_SELECTOR, "[data-testid='stImage'] img")) == images_before + 1
    driver.save_screenshot(str(shots / "3_case_heatmap.png"))

    first_group = driver.find_elements(By.CSS_SELECTOR, "[data-testid='stForm'] [role='radiogroup']")[0]
    option = first_group.find_element(By.XPATH, ".//label[.//p[normalize-space(text())='disagree']]")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", option)
    option.click()
    comment = driver.find_elements(By.CSS_SELECTOR, "[data-testid='stForm'] input[type='text']")[0]
    comment.send_keys("e2e: not convinced")
    _click(driver, "//button[.//p[normalize-space(text())='Submit feedback']]")
    _wait_text(driver, "Feedback saved for 1 finding(s)", 60)
    driver.save_screenshot(str(shots / "4_feedback_saved.png"))

    store = FeedbackStore(dashboard_server.db_url)
    deadline = time.time() + 10
    rows = store.feedback()
    while not rows and time.time() < deadline:
        time.sleep(0.5)
        rows = store.feedback()
    assert len(rows) == 1
    row = rows[0]
    assert row.verdict == "disagree" and row.comment == "e2e: not convinced" and row.label == "nodule"
    assert row.model_version.startswith("clinmm-e2e-untrained") and len(row.model_sha256) == 64
    assert {e.action for e in store.audit()} >= {"view_case", "feedback"}
    print(f"screenshots: {sorted(str(p) for p in shots.glob('*.png'))}")
    for name in ("1_worklist.png", "2_case.png", "3_case_heatmap.png", "4_feedback_saved.png"):
        assert (shots / name).stat().st_size > 10_000, name
