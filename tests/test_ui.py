"""The search views in the real MLflow UI: a search tracked to an `mlflow server`, its parent
run's `views/search.html` opened in MLflow's artifact viewer in headless Chromium, and every
view found drawn inside it (plotly ran: the page needs no network)."""

from __future__ import annotations

import os
import shutil

import pytest

from raysweep.search import run_search
from raysweep.spec import validate
from tests.conftest import make_raw

VIEWS = ("importance", "parallel_coordinates", "slice", "learning_curves", "timeline", "audit", "best_vs_cost")


def _browser():
    """Headless Chromium through its WebDriver (Debian's chromium and chromium-driver; .ci/run
    installs both). Missing on a developer's machine: skipped there, a failure in CI."""
    driver_path = shutil.which("chromedriver")
    try:
        from selenium import webdriver
    except ImportError:
        driver_path = None
    if driver_path is None:
        if os.environ.get("CI"):
            pytest.fail("chromium-driver and selenium are needed for the MLflow UI test (.ci/run installs them)")
        pytest.skip("no chromedriver/selenium here: apt-get install chromium chromium-driver")
    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(arg)
    return webdriver.Chrome(service=webdriver.ChromeService(executable_path=driver_path), options=options)


def test_the_parent_run_shows_every_search_view_in_the_mlflow_ui(ray_session, mlflow_server, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait

    # scheduler.audit: the audit view has its audited trials whatever the rungs' correlations.
    spec = validate(make_raw(**{"name": "ui-views", "search.num_samples": 8, "max_epochs": 3, "scheduler.audit": 2}))
    result = run_search(spec, storage=str(tmp_path / "results"), tracking_uri=mlflow_server)
    browser = _browser()
    try:
        browser.get(f"{mlflow_server}/#/experiments/{result.experiment_id}/runs/{result.parent_run_id}"
                    "/artifactPath/views/search.html")
        frame = WebDriverWait(browser, 60).until(
            ready.presence_of_element_located((By.CSS_SELECTOR, "iframe.mlflow-html-iframe")))
        browser.switch_to.frame(frame)
        WebDriverWait(browser, 60).until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "section .main-svg")) > 0)
        for view in VIEWS:
            section = browser.find_element(By.ID, view)
            assert section.find_elements(By.CSS_SELECTOR, ".main-svg"), f"{view}: plotly drew nothing"
            assert section.find_element(By.TAG_NAME, "h2").text
    finally:
        browser.quit()
