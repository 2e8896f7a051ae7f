"""The report page in headless Chromium: the counts it shows, and its filters changing the rows
shown. Skipped, with the reason, where selenium or Chromium is missing (CI installs both)."""

from __future__ import annotations

import pytest
from report_fixtures import FINETUNED_RIGHT, HARDNESS, OUTCOMES, QUESTIONS, build_run, run_report
from script_modules import load_script

screenshot = load_script("benchmarks/screenshot_report.py")
MISSING = screenshot.browser_missing()
pytestmark = pytest.mark.skipif(MISSING is not None, reason=f"no browser to drive: {MISSING}")


@pytest.fixture(scope="module")
def browser(tmp_path_factory, run_script):
    paths = build_run(tmp_path_factory.mktemp("report"), run_script)
    done = run_report(paths, run_script)
    assert done.returncode == 0, done.stderr
    driver = screenshot.start_browser()
    driver.get((paths["folder"] / "outputs" / "report" / "index.html").resolve().as_uri())
    yield driver
    driver.quit()


def by_css(driver, selector: str):
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, selector)


def count(driver, group: str, value: str) -> int:
    return int(by_css(driver, f'button[data-group="{group}"][data-value="{value}"] .n')[0].text)


def shown(driver) -> list[int]:
    return [int(row.get_attribute("data-question")) for row in by_css(driver, "section.q") if row.is_displayed()]


def click(driver, group: str, value: str) -> None:
    by_css(driver, f'button[data-group="{group}"][data-value="{value}"]')[0].click()


def status(driver) -> str:
    return by_css(driver, "#status")[0].text


def test_counts_match_the_questions(browser):
    assert shown(browser) == list(range(len(QUESTIONS)))
    assert status(browser) == f"showing {len(QUESTIONS)} of {len(QUESTIONS)} questions"
    assert {level: count(browser, "hardness", level) for level in HARDNESS} == HARDNESS
    assert count(browser, "after", "right") == FINETUNED_RIGHT
    assert count(browser, "after", "wrong") == len(QUESTIONS) - FINETUNED_RIGHT
    assert {kind: count(browser, "change", kind) for kind in OUTCOMES} == OUTCOMES
    assert count(browser, "kind", "name") == 1 and count(browser, "kind", "result") == 2


def test_filters_change_the_rows_shown_and_the_counts(browser):
    click(browser, "change", "broken")
    assert shown(browser) == [1, 4] and status(browser) == "showing 2 of 7 questions"
    # the other filters count within the broken questions
    assert count(browser, "hardness", "easy") == 1 and count(browser, "hardness", "medium") == 1
    assert count(browser, "hardness", "hard") == 0
    click(browser, "mode", "plug")  # 'FRANCE' is right with the gold's value: no longer broken
    assert shown(browser) == [1]
    click(browser, "change", "all")
    click(browser, "mode", "exec")
    click(browser, "hardness", "easy")
    assert shown(browser) == [0, 4, 5]
    click(browser, "hardness", "all")
    by_css(browser, "#search")[0].send_keys("France")
    assert shown(browser) == [4]
    by_css(browser, "#search")[0].clear()
    by_css(browser, "#search")[0].send_keys(" ")  # an input event with an empty search
    assert shown(browser) == list(range(len(QUESTIONS)))


def test_results_open_on_demand(browser):
    from selenium.webdriver.support.ui import WebDriverWait

    row = by_css(browser, 'section.q[data-question="0"]')[0]
    assert not row.find_elements("css selector", ".previews")  # drawn only when opened
    row.find_element("css selector", "details.results summary").click()
    # the page draws the results on the details' toggle event, which the browser fires after the click
    boxes = WebDriverWait(browser, 10).until(lambda _: row.find_elements("css selector", ".previews > div"))
    assert [box.find_element("css selector", "h4").text for box in boxes] == ["gold", "base", "fine-tuned"]
    assert boxes[0].find_element("css selector", "td").text == "6"
    assert "no such table: singers" in boxes[1].text
    assert "without DISTINCT" in row.find_element("css selector", ".preview-note").text
