"""Real headless Chromium (Debian's /usr/bin/chromium, driven by Playwright; no browser download) against
pytest-django's live_server. Runs on the production configuration only (marker `browser`)."""

import os
import re
from pathlib import Path

import pytest

from tenants.models import Membership
from tests.factories import MembershipFactory, UserFactory

# Playwright's sync API runs an event loop in this thread; the ORM calls the tests make are still synchronous.
os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"

SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
CSP_VIOLATION = re.compile(r"Content Security Policy|Refused to (execute|apply|load)", re.IGNORECASE)


@pytest.fixture(autouse=True)
def _unhashed_static_files(settings):
    # live_server serves static files through the finders, which know unhashed names only.
    settings.STORAGES = {**settings.STORAGES,
                         "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}}


@pytest.fixture(scope="session")
def chromium():
    from playwright.sync_api import sync_playwright

    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium package (apt-get install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


class Console:
    def __init__(self):
        self.messages: list[str] = []

    def csp_violations(self) -> list[str]:
        return [m for m in self.messages if CSP_VIOLATION.search(m)]

    def errors(self) -> list[str]:
        return [m for m in self.messages if m.startswith("error:")]


@pytest.fixture
def owner(tenant):
    user = UserFactory(username="olivia")
    MembershipFactory(tenant=tenant, user=user, role=Membership.Role.OWNER)
    return user


@pytest.fixture
def console():
    return Console()


@pytest.fixture
def page(chromium, console, live_server):
    context = chromium.new_context(viewport={"width": 1360, "height": 900}, base_url=live_server.url)
    page = context.new_page()
    page.on("console", lambda message: console.messages.append(f"{message.type}: {message.text} @ {message.location}"))
    page.on("pageerror", lambda error: console.messages.append(f"error: {error}"))
    page.set_default_timeout(10_000)
    yield page
    context.close()
    assert console.csp_violations() == [], console.csp_violations()


def screenshot(page, name: str, *, full_page: bool = True) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path


PASSWORD = "correct-horse-battery"  # the factories' password


def sign_in(page, username: str, password: str = PASSWORD) -> None:
    page.goto("/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r"/$"))
