"""The writer's page in a real headless Chromium (Debian's chromium + chromedriver, driven by Selenium).

Skipped with a reason when chromium is absent outside CI; in CI (CI=true) it must run (.ci/run installs it).
"""

from __future__ import annotations

import os
import shutil

import pytest

from .conftest import API_KEY

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.path.exists(p)]
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing.append("the selenium package")
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the browser test but {', '.join(missing)} is missing (see .ci/run)")
        pytest.skip(f"{', '.join(missing)} not installed: apt-get install -y chromium chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def _wait(driver, condition, seconds: float = 60):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, seconds, poll_frequency=0.1).until(condition)


def test_page_streams_drafts_and_shows_errors_readably(browser, server):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    def el(css):
        return browser.find_element(By.CSS_SELECTOR, css)

    browser.get(server + "/")
    # the server needs a key: the page says so in words, not a stack trace
    error = _wait(browser, lambda d: d.find_element(By.ID, "error") if d.find_element(By.ID, "error").text else None)
    assert "401" in error.text and "API key" in error.text
    el("#api-key").send_keys(API_KEY + Keys.TAB)  # leaving the field fires its change event: the page reloads lists
    _wait(browser, lambda d: len(Select(d.find_element(By.ID, "model")).options) == 3)
    assert not el("#error").is_displayed()

    Select(el("#model")).select_by_value("summary")
    Select(el("#task")).select_by_value("continue")
    field = _wait(browser, lambda d: d.find_element(By.ID, "field-input"))
    field.send_keys("The lighthouse keeper opened the door and saw")
    for css, value in (("#n", "2"), ("#temperature", "1"), ("#max-tokens", "24")):
        el(css).clear()
        el(css).send_keys(value)
    el("#write").click()
    _wait(browser, lambda d: "Done" in d.find_element(By.ID, "status").text)
    drafts = browser.find_elements(By.CSS_SELECTOR, "#candidates .candidate .text")
    assert len(drafts) == 2
    for draft in drafts:
        assert draft.text.strip()
        assert int(draft.get_attribute("data-chunks")) > 1  # arrived in several streamed pieces
    # a draft can be edited in place and copied
    drafts[0].click()
    drafts[0].send_keys(" EDITED")
    assert "EDITED" in drafts[0].text
    browser.find_elements(By.CSS_SELECTOR, "#candidates .copy")[0].click()
    _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#candidates .state")[0].text == "copied")

    # an empty field: the server's 400 message is shown, readably
    field.clear()
    el("#write").click()
    error = _wait(browser, lambda d: d.find_element(By.ID, "error") if d.find_element(By.ID, "error").text else None)
    assert error.is_displayed()
    assert "400" in error.text and "'input'" in error.text and "must not be empty" in error.text
    assert browser.find_elements(By.CSS_SELECTOR, "#candidates .candidate") == []
