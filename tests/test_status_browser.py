"""The status page in a real browser (headless Chromium from Debian's packages, driven by Selenium): what a
person sees on /status of a running ghapp fed with real signed webhooks. Saves a screenshot (a test artifact;
set GHAPP_TEST_ARTIFACTS=DIR to keep it — docs/status.png was taken this way)."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from .conftest import ORG_INSTALLATION, OTHER_ORG_INSTALLATION, USER_INSTALLATION, Ghapp, write_pools

LINUX = ["self-hosted", "linux", "x64"]
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)


def browser(profile: Path, *, width: int, height: int) -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))


def section(driver: webdriver.Chrome, anchor: str) -> str:
    """The text a person sees in one section of the page."""
    return str(driver.find_element(By.ID, anchor).text)


def rows(driver: webdriver.Chrome, anchor: str) -> list[list[str]]:
    return [
        [cell.text for cell in row.find_elements(By.TAG_NAME, "td")]
        for row in driver.find_elements(By.CSS_SELECTOR, f"#{anchor} tbody tr")
    ]


def look(url: str, profile: Path, screenshot: Path) -> dict[str, object]:
    """Open the page as a person would, on a desktop and on a phone; return what they see."""
    seen: dict[str, object] = {}
    driver = browser(profile / "desktop", width=1280, height=1900)
    try:
        driver.get(url)
        seen["title"] = driver.title
        seen["refresh"] = driver.find_element(By.CSS_SELECTOR, 'meta[http-equiv="refresh"]').get_attribute(
            "content"
        )
        seen["header"] = driver.find_element(By.TAG_NAME, "header").text
        seen["pools"] = rows(driver, "pools")
        seen["waiting"] = rows(driver, "waiting-jobs")
        seen["refusals"] = rows(driver, "refusals-by-rule")
        seen["installations"] = rows(driver, "installations")
        seen["recent"] = section(driver, "recent-jobs")
        seen["settings"] = section(driver, "settings")
        seen["scripts"] = len(driver.find_elements(By.TAG_NAME, "script"))
        driver.save_screenshot(str(screenshot))
    finally:
        driver.quit()
    phone = browser(profile / "phone", width=390, height=844)
    try:
        phone.get(url)
        seen["phone_overflow"] = phone.execute_script(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        seen["phone_waiting"] = section(phone, "waiting-jobs")
    finally:
        phone.quit()
    return seen


async def test_a_person_sees_waiting_jobs_refusals_and_pools(
    ghapp_with: Callable[..., Awaitable[Ghapp]], tmp_path: Path
) -> None:
    pools = write_pools(tmp_path / "pools.yaml", max_runners=1)
    ghapp = await ghapp_with(GHAPP_POOLS_FILE=str(pools), GHAPP_ALLOWED_ACCOUNTS="acme,alice")
    await ghapp.queue(installation_id=ORG_INSTALLATION, repository="acme/webapp", labels=LINUX, name="build")
    await ghapp.settle()
    await ghapp.queue(installation_id=USER_INSTALLATION, repository="alice/tools", labels=LINUX, name="test")
    await ghapp.queue(
        installation_id=OTHER_ORG_INSTALLATION, repository="globex/site", labels=LINUX, name="lint"
    )
    await ghapp.settle()

    screenshot = tmp_path / "status.png"
    url = str(ghapp.admin.make_url("/status"))
    seen = await asyncio.to_thread(look, url, tmp_path / "chromium", screenshot)

    assert seen["title"] == "ghapp status"
    assert seen["refresh"] == "15"  # it refreshes itself
    assert seen["scripts"] == 0  # no JavaScript at all
    assert "3 job(s) waiting" in str(seen["header"])  # queued in GitHub, whatever the reason
    # the pool's numbers: one runner of one, one job waiting for it
    (pool,) = seen["pools"]  # type: ignore[misc]
    assert pool[:4] == ["linux", "1/1", "1", "healthy"]
    # the waiting jobs and why: acme's runner is starting, alice's waits for capacity, globex's was refused
    waiting = {row[0]: row for row in seen["waiting"]}  # type: ignore[attr-defined]
    assert set(waiting) == {"acme/webapp", "alice/tools", "globex/site"}
    assert waiting["acme/webapp"][4] == "runner starting"
    assert waiting["alice/tools"][1] == "test"
    assert waiting["alice/tools"][2] == "self-hosted, linux, x64"
    assert waiting["alice/tools"][4] == "capacity"
    assert "pool linux is full (1/1 runners)" in waiting["alice/tools"][5]
    assert waiting["globex/site"][4] == "refused"
    assert "account-not-allowed" in waiting["globex/site"][5]
    # refusals by rule, with an example
    (refusal,) = seen["refusals"]  # type: ignore[misc]
    assert refusal[:3] == ["account-not-allowed", "1", "globex/site · lint"]
    # installations: who may get runners
    allowed = {row[0]: row[2] for row in seen["installations"]}  # type: ignore[attr-defined]
    assert allowed["acme"] == "yes"
    assert allowed["globex"].startswith("no")
    assert "acme/webapp" in str(seen["recent"])
    # settings, never a secret
    assert "webhook_secret" not in str(seen["settings"])
    assert "private_key" not in str(seen["settings"])
    assert "allowed_accounts" in str(seen["settings"])
    # readable on a phone: nothing wider than the screen (wide tables scroll inside their box)
    assert seen["phone_overflow"] == 0
    assert "capacity" in str(seen["phone_waiting"])
    assert screenshot.stat().st_size > 10_000
    artifacts = os.environ.get("GHAPP_TEST_ARTIFACTS")
    if artifacts:
        shutil.copy(screenshot, Path(artifacts) / "status.png")
