"""The page of `movielens serve` in a real browser: Debian's Chromium, headless, driven by Selenium
through the system chromedriver (no browser download). A person searches, rates three movies with
the stars, and gets a list without them, with titles, genres and predicted ratings; "similar
movies" works from any title. The screenshot goes to docs/service.png.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from test_service import MOVIES, Service, write_cinema

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOT = ROOT / "docs" / "service.png"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1200",
)
WAIT_S = 30
TITLES = {m: t for m, t, _ in MOVIES}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    running = Service(write_cinema(tmp_path_factory.mktemp("cinema")))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not (Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file()):
        pytest.skip("needs Debian's chromium and chromium-driver (make deps installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as Driver

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    driver = webdriver.Chrome(service=Driver(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(WAIT_S)
    yield driver
    driver.quit()


def movie_ids(browser, list_id: str) -> list[int]:
    from selenium.webdriver.common.by import By

    items = browser.find_elements(By.CSS_SELECTOR, f"#{list_id} li.movie")
    return [int(item.get_attribute("data-movie-id")) for item in items]


def test_rate_three_movies_and_get_a_list_without_them(service, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, WAIT_S)
    browser.get(f"http://127.0.0.1:{service.port}/")
    wait.until(lambda b: "movies" in b.find_element(By.ID, "serving").text)
    chosen = []
    for query, stars in (("toy story", 5), ("star wars", 5), ("godfather", 2)):
        box = browser.find_element(By.ID, "search")
        box.clear()
        box.send_keys(query)
        browser.find_element(By.CSS_SELECTOR, "#search-form button").click()
        wait.until(lambda b, q=query: q.split()[0] in b.find_element(By.ID, "results").text.lower())
        first = browser.find_element(By.CSS_SELECTOR, "#results li.movie")
        chosen.append(int(first.get_attribute("data-movie-id")))
        first.find_element(By.CSS_SELECTOR, f".stars button[data-value='{stars}']").click()
    listed = browser.find_element(By.ID, "recommendations")
    wanted = ",".join(map(str, chosen))
    wait.until(
        lambda b: (
            listed.get_attribute("data-state") == "ready"
            and listed.get_attribute("data-rated") == wanted
        )
    )
    found = movie_ids(browser, "recommendations")
    assert len(found) == 10 and not set(found) & set(chosen)
    assert movie_ids(browser, "rated") == chosen
    first = browser.find_element(By.CSS_SELECTOR, "#recommendations li.movie")
    assert TITLES[found[0]] in first.text and "predicted" in first.text
    assert first.find_element(By.CLASS_NAME, "genres").text
    assert browser.find_element(By.ID, "status").text == ""
    first.find_element(By.CLASS_NAME, "similar-link").click()
    wait.until(lambda b: movie_ids(b, "similar"))
    assert found[0] not in movie_ids(browser, "similar")
    assert TITLES[found[0]] in browser.find_element(By.ID, "alike-title").text
    browser.execute_script("window.scrollTo(0, 0)")
    assert browser.get_screenshot_as_file(str(SCREENSHOT))
    assert SCREENSHOT.stat().st_size > 10_000


def test_a_search_without_a_match_says_so_on_the_page(service, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"http://127.0.0.1:{service.port}/")
    browser.find_element(By.ID, "search").send_keys("zzzz")
    browser.find_element(By.CSS_SELECTOR, "#search-form button").click()
    WebDriverWait(browser, WAIT_S).until(lambda b: b.find_element(By.ID, "status").text)
    assert browser.find_element(By.ID, "status").text == 'No title holds "zzzz".'
    assert movie_ids(browser, "results") == []
