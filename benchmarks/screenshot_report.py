"""A PNG screenshot of a report page (outputs/report/index.html, or a `sqlora compare` page) in
headless Chromium, for docs/figures:

    python benchmarks/screenshot_report.py outputs/report/index.html --out docs/figures/report.png \
        --click change=broken --expand 1

--click GROUP=VALUE presses a filter button first (groups: mode, hardness, after, change, kind),
--search types into the search box, --expand N opens the results of the first N questions shown.
Needs selenium (the dev extras) and Chromium with its driver (Debian: apt-get install chromium
chromium-driver); CHROMIUM and CHROMEDRIVER name them where they are not on the PATH.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")
DRIVERS = ("chromedriver",)


def find_program(variable: str, names: tuple[str, ...]) -> str | None:
    """$variable, or the first of names on the PATH."""
    if os.environ.get(variable):
        return os.environ[variable]
    return next((found for name in names if (found := shutil.which(name))), None)


def browser_missing() -> str | None:
    """Why no headless Chromium can be started here, or None when one can."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e \".[dev]\")"
    if not find_program("CHROMIUM", BROWSERS):
        return "no Chromium found (Debian: apt-get install chromium chromium-driver; or set CHROMIUM)"
    if not find_program("CHROMEDRIVER", DRIVERS):
        return "no chromedriver found (Debian: apt-get install chromium-driver; or set CHROMEDRIVER)"
    return None


def start_browser(width: int = 1400, height: int = 1000):
    """Headless Chromium under selenium, with the browser and driver found here (never downloaded)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = find_program("CHROMIUM", BROWSERS)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     f"--window-size={width},{height}", "--hide-scrollbars"):
        options.add_argument(argument)
    return webdriver.Chrome(options=options, service=Service(executable_path=find_program("CHROMEDRIVER", DRIVERS)))


def click_filter(driver, group: str, value: str) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.CSS_SELECTOR, f'button[data-group="{group}"][data-value="{value}"]').click()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("page", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--height", type=int, default=1000)
    parser.add_argument("--click", action="append", default=[], metavar="GROUP=VALUE")
    parser.add_argument("--search", default="")
    parser.add_argument("--expand", type=int, default=0, metavar="N")
    args = parser.parse_args()
    if not args.page.is_file():
        sys.exit(f"error: {args.page} not found")
    if (why := browser_missing()) is not None:
        sys.exit(f"error: {why}")

    from selenium.webdriver.common.by import By

    driver = start_browser(args.width, args.height)
    try:
        driver.get(args.page.resolve().as_uri())
        for click in args.click:
            group, _, value = click.partition("=")
            click_filter(driver, group, value)
        if args.search:
            driver.find_element(By.ID, "search").send_keys(args.search)
        shown = [row for row in driver.find_elements(By.CSS_SELECTOR, "section.q") if row.is_displayed()]
        for row in shown[: args.expand]:
            row.find_element(By.CSS_SELECTOR, "details.results summary").click()
        args.out.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(args.out))
    finally:
        driver.quit()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
