"""The patient page in a real headless Chromium (issue 22): signed in through the login page, the
pathway shown, usable by keyboard and at 360 px, screenshots kept as test artefacts
($COORDINATION_TEST_ARTEFACTS, default tests/artefacts/), and an axe-core
check with no serious or critical violation.

The app is served by a real Werkzeug server on a free port. Skipped when /usr/bin/chromium or
/usr/bin/chromedriver is absent (.ci/run installs both).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.conftest import Fhir
from tests.support.auth import PASSWORD
from tests.support.browser import ARTEFACTS, MISSING, chromium, serving
from tests.support.patient_page import PatientWorld, build_patient_world

if MISSING:
    pytest.skip(MISSING, allow_module_level=True)

from axe_selenium_python import Axe
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

WAIT = 15  # seconds


@pytest.fixture
def live(client: FlaskClient, app: Flask, fhir: Fhir, backend: str) -> Iterator[tuple[str, PatientWorld]]:
    if backend != "sqlite":
        pytest.skip("the browser runs once, on SQLite (tests/pages covers both backends)")
    world = build_patient_world(app, client, fhir)
    with serving(app) as url:
        yield url, world


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    driver = chromium(tmp_path / "chromium-profile", "--lang=fr-FR", "--window-size=1280,1000", wait=WAIT)
    try:
        yield driver
    finally:
        driver.quit()


def _no_serious_violation(browser: WebDriver, report: str) -> None:
    """axe-core on the page as shown; its full report kept beside the screenshots."""
    axe = Axe(browser)
    axe.inject()
    results: dict[str, Any] = axe.run()
    (ARTEFACTS / report).write_text(axe.report(results["violations"]), "utf-8")
    serious = [
        f"{v['id']} ({v['impact']}): {[n['target'] for n in v['nodes']][:5]}"
        for v in results["violations"]
        if v.get("impact") in {"serious", "critical"}
    ]
    assert serious == [], serious


def test_patient_page_in_chromium(live: tuple[str, PatientWorld], browser: WebDriver) -> None:
    base, world = live
    page = f"/app/patients/{world.pid}"
    browser.get(f"{base}{page}")
    # Not signed in: the login page, which brings her back to the patient's page.
    WebDriverWait(browser, WAIT).until(ec.presence_of_element_located((By.ID, "login")))
    browser.find_element(By.NAME, "username").send_keys("dr-martin")
    browser.find_element(By.NAME, "password").send_keys(PASSWORD)
    browser.find_element(By.ID, "login").click()
    WebDriverWait(browser, WAIT).until(ec.presence_of_element_located((By.ID, "patient")))
    assert browser.current_url == f"{base}{page}"
    assert browser.find_element(By.TAG_NAME, "html").get_attribute("lang") == "fr"
    assert browser.find_element(By.ID, "patient").text == "Hélène Lefèvre"
    assert "Opposition au partage" in browser.find_element(By.ID, "opposition").text
    assert browser.find_elements(By.CSS_SELECTOR, "ol.timeline li")  # the protocol's Tasks
    download = browser.find_element(By.PARTIAL_LINK_TEXT, "Télécharger")
    assert str(download.get_attribute("href")).endswith(f"{page}/documents/{world.document}")

    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(1280, min(int(height) + 120, 4000))  # the whole page in one picture
    browser.save_screenshot(str(ARTEFACTS / "patient-page.png"))
    browser.set_window_size(1280, 1000)

    # Keyboard: the first Tab reaches the skip link, Enter takes the focus to the content.
    body = browser.find_element(By.TAG_NAME, "body")
    body.send_keys(Keys.TAB)
    assert browser.switch_to.active_element.get_attribute("class") == "skip"
    browser.switch_to.active_element.send_keys(Keys.ENTER)
    WebDriverWait(browser, WAIT).until(lambda d: d.switch_to.active_element.get_attribute("id") == "contenu")

    _no_serious_violation(browser, "patient-page-axe.txt")

    # 360 px wide: nothing wider than the screen but the tables' own scrolling boxes.
    browser.set_window_size(360, 800)
    browser.refresh()
    WebDriverWait(browser, WAIT).until(ec.presence_of_element_located((By.ID, "patient")))
    width = browser.execute_script("return document.documentElement.scrollWidth")
    viewport = browser.execute_script("return document.documentElement.clientWidth")
    assert width <= viewport, (width, viewport)
    browser.execute_script("window.scrollTo(0, 0)")
    browser.save_screenshot(str(ARTEFACTS / "patient-page-360px.png"))
    _no_serious_violation(browser, "patient-page-360px-axe.txt")
