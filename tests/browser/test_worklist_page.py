"""The worklist (/app/) in a real headless Chromium (issue 22): a coordinator signs in and sees a
discharge posted through $process-message appear within the quiet refresh, a nurse accepts the offered
Task with « Accepter la tâche », a second nurse who clicks too sees « Déjà prise », the first clicks
« Terminer » and the coordinator sees it done. axe-core finds no serious or critical violation; the
page fits 360 px. Screenshots go to $COORDINATION_TEST_ARTEFACTS (default tests/artefacts/).

One backend (SQLite): the HTTP tests cover both; a browser session costs seconds."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.conftest import Fhir
from tests.support.auth import PASSWORD
from tests.support.browser import ARTEFACTS, MISSING, chromium, serving
from tests.support.pages import Cpts, build_cpts, offer_task, post_discharge

if MISSING:
    pytest.skip(MISSING, allow_module_level=True)

from axe_selenium_python import Axe
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

WAIT = 15  # seconds
REFRESH_WAIT = 45  # the page refreshes every 30 s


@pytest.fixture
def base(app: Flask, backend: str) -> Iterator[str]:
    if backend != "sqlite":
        pytest.skip("the browser runs once, on SQLite (tests/pages covers both backends)")
    with serving(app, "pages-browser-server") as url:
        yield url


def _driver(profile: Path) -> WebDriver:
    return chromium(profile, "--window-size=1280,1000", "--lang=fr-FR", wait=WAIT, script_wait=WAIT)


@pytest.fixture
def browsers(tmp_path: Path) -> Iterator[tuple[WebDriver, WebDriver]]:
    first = _driver(tmp_path / "one")
    try:
        second = _driver(tmp_path / "two")
        try:
            yield first, second
        finally:
            second.quit()
    finally:
        first.quit()


def sign_in(driver: WebDriver, base: str, username: str) -> None:
    driver.delete_all_cookies()
    driver.get(f"{base}/app/")
    WebDriverWait(driver, WAIT).until(ec.presence_of_element_located((By.ID, "login")))
    assert urlsplit(driver.current_url).path == "/auth/login"
    driver.find_element(By.NAME, "username").send_keys(username)
    driver.find_element(By.NAME, "password").send_keys(PASSWORD)
    driver.find_element(By.ID, "login").click()
    WebDriverWait(driver, WAIT).until(lambda d: urlsplit(d.current_url).path == "/app/")
    WebDriverWait(driver, WAIT).until(ec.presence_of_element_located((By.ID, "sorties")))


def shot(driver: WebDriver, name: str) -> None:
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(ARTEFACTS / f"{name}.png"))


def no_serious_violation(driver: WebDriver) -> None:
    axe = Axe(driver)
    axe.inject()
    results = axe.run()
    serious = [v for v in results["violations"] if v.get("impact") in {"serious", "critical"}]
    assert not serious, axe.report(serious)


def click(driver: WebDriver, row: str, name: str) -> None:
    """The button of ``row`` whose accessible name (its text) is ``name``."""
    button = driver.find_element(By.ID, row).find_element(By.XPATH, f'.//button[normalize-space()="{name}"]')
    button.click()


def test_discharge_offer_race_done_as_people_see_it(
    app: Flask, client: FlaskClient, fhir: Fhir, base: str, browsers: tuple[WebDriver, WebDriver]
) -> None:
    one, two = browsers
    cpts: Cpts = build_cpts(app, fhir)

    # The coordinator's page is open before the hospital's message arrives.
    sign_in(one, base, "coord")
    assert one.find_element(By.CSS_SELECTOR, "#sorties caption").text == "Sorties à suivre"
    one.execute_script("window.notReloaded = true;")
    encounter = post_discharge(client, cpts).split("/")[1]
    offer = offer_task(fhir, cpts)
    WebDriverWait(one, REFRESH_WAIT).until(ec.presence_of_element_located((By.ID, f"sortie-{encounter}")))
    assert one.execute_script("return window.notReloaded === true;")  # refreshed quietly, in place
    row = one.find_element(By.ID, f"sortie-{encounter}")
    assert "Hélène Lefèvre" in row.text and "En retard" in row.text
    assert "1 sortie" in one.title
    shot(one, "worklist-coordinator")
    no_serious_violation(one)

    # Both usual nurses see the offer; the second keeps her page open.
    sign_in(two, base, "ide-b")
    click_target = f"a-prendre-{offer}"
    assert two.find_element(By.ID, click_target)
    sign_in(one, base, "ide-a")
    click(one, click_target, "Accepter la tâche")
    WebDriverWait(one, WAIT).until(ec.presence_of_element_located((By.ID, "notice")))
    assert "Tâche acceptée" in one.find_element(By.ID, "notice").text
    assert one.find_element(By.ID, f"mienne-{offer}")
    shot(one, "worklist-nurse-accepted")

    # The second nurse clicks on her (now stale) page.
    click(two, click_target, "Accepter la tâche")
    WebDriverWait(two, WAIT).until(ec.presence_of_element_located((By.ID, "error")))
    assert two.find_element(By.ID, "error").text.startswith("Déjà prise par")
    shot(two, "worklist-already-taken")
    no_serious_violation(two)

    # The owner finishes it; the coordinator sees it done.
    click(one, f"mienne-{offer}", "Terminer")
    WebDriverWait(one, WAIT).until(ec.presence_of_element_located((By.ID, "notice")))
    assert "Tâche terminée" in one.find_element(By.ID, "notice").text
    sign_in(two, base, "coord")
    done = two.find_element(By.ID, f"sortie-{encounter}").find_element(By.CLASS_NAME, "done").text
    assert done.startswith("1 /")

    # 360 px wide: nothing but the tables' own scrolling areas is wider than the screen.
    two.set_window_size(360, 800)
    two.refresh()
    WebDriverWait(two, WAIT).until(ec.presence_of_element_located((By.ID, "sorties")))
    width = two.execute_script("return [document.documentElement.scrollWidth, window.innerWidth];")
    assert width[0] <= width[1], width
    shot(two, "worklist-360px")
