"""Single sign-on in chromium against a real OpenID Connect provider: django-oauth-toolkit in a
second Django process (``tests/oidc_provider/``, RS256 key made for the run), the app under
Daphne pointed at it by ``OIDC_ISSUER``, accounts required.

A person clicks "Sign in with Test ID", signs in on the provider's own page and comes back
signed in: the first time an account is made (named from the provider's username), a chat can
be started, signing out ends the session, closes its sockets in every tab and signs out at the
provider too (``OIDC_LOGOUT_AT_PROVIDER``), and signing in again finds the same account. A
person whose email domain is not allowed comes back to the login page with the reason, no
account is made, and the password throttle counts nothing. The ``sso`` fixture (conftest)
starts the provider and the app."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.support.app import App
from tests.support.browser import desktop_tab, open_new_chat
from tests.support.oidc_provider import PASSWORD, Provider

pytestmark = pytest.mark.live

BUTTON = "Sign in with Test ID"
REFUSED = "Your email address is not in a domain allowed to sign in here."


def accounts(db: Path) -> list[tuple[int, str, str, bool]]:
    """(id, username, email, password usable) of every account in the app's database."""
    with sqlite3.connect(db) as connection:
        return connection.execute(
            "SELECT id, username, email, password NOT LIKE '!%' FROM auth_user ORDER BY id"
        ).fetchall()


def links(db: Path) -> list[tuple[int, str]]:
    """(account, provider's sub) of every single sign-on link."""
    with sqlite3.connect(db) as connection:
        return connection.execute("SELECT user_id, subject FROM chat_signon ORDER BY id").fetchall()


def sign_in_at_provider(page: Page, username: str) -> None:
    """The provider's own sign-in form (on its host, localhost)."""
    expect(page.get_by_role("heading", name="Test provider")).to_be_visible()
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Continue").click()


def test_first_sign_in_makes_the_account_and_the_next_finds_it(
    browser: Browser, sso: tuple[App, Provider], problems: list[str]
) -> None:
    app, provider = sso
    with desktop_tab(browser, problems) as page:
        page.goto(app.url + "/")
        # The login page: the button beside the password form (OIDC_ONLY is off).
        expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
        expect(page.get_by_label("Password")).to_be_visible()
        page.get_by_role("link", name=BUTTON).click()
        page.wait_for_url(f"{provider.url}/**")
        sign_in_at_provider(page, "alice")

        expect(page.locator(".sidebar__user")).to_contain_text("Signed in as alice.")
        # No password here to change: the provider holds it.
        expect(page.get_by_role("link", name="Change password")).to_have_count(0)
        assert page.url.startswith(app.url + "/")
        [(user_id, username, email, usable)] = accounts(app.db_path)
        assert (username, email, usable) == ("alice", "alice@example.com", False)
        assert [user for user, _ in links(app.db_path)] == [user_id]

        open_new_chat(page, app)
        box = page.locator("#message")
        box.fill("Hello from single sign-on\n#sim tokens=20 tps=200 ttft=0.05")
        box.press("Enter")
        expect(
            page.locator('article[data-role="assistant"][data-status="complete"]')
        ).to_have_count(1, timeout=20000)

        # A second tab of the same session, its socket open on the chat.
        # Not watched for problems: once signed out, its reconnects are refused, and chromium
        # reports each refused websocket as a console error.
        other = page.context.new_page()
        other.goto(page.url)
        other.wait_for_selector('[data-connected="true"]')

        # Signing out goes through the provider's sign-out (OIDC_LOGOUT_AT_PROVIDER) and back
        # to the login page.
        page.get_by_role("button", name="Sign out").click()
        page.wait_for_url(f"{app.url}/accounts/login/")
        expect(page.get_by_role("link", name=BUTTON)).to_be_visible()
        # Signing out closed the other tab's socket too (the session's sockets end with it).
        expect(other.locator("[data-connected]")).to_have_attribute("data-connected", "false")
        other.close()
        page.goto(app.url + "/")
        expect(page.get_by_role("link", name=BUTTON)).to_be_visible()

        # Again: signed out at the provider too, so its form again; then the same account.
        page.get_by_role("link", name=BUTTON).click()
        sign_in_at_provider(page, "alice")
        expect(page.locator(".sidebar__user")).to_contain_text("Signed in as alice.")
        assert [row[0] for row in accounts(app.db_path)] == [user_id]
        assert len(links(app.db_path)) == 1
        # Alice's chat is still hers.
        expect(page.locator(".conversations a")).to_have_count(1)
    assert problems == []


def test_a_refused_domain_is_told_why_and_gets_no_account(
    browser: Browser, sso: tuple[App, Provider], problems: list[str]
) -> None:
    app, _ = sso
    before = accounts(app.db_path)
    with desktop_tab(browser, problems) as page:
        page.goto(app.url + "/accounts/login/")
        page.get_by_role("link", name=BUTTON).click()
        sign_in_at_provider(page, "mallory")

        expect(page.get_by_role("alert")).to_have_text(REFUSED)
        assert page.url.startswith(app.url + "/accounts/login/")
        assert accounts(app.db_path) == before
        # Not counted by the password throttle either.
        with sqlite3.connect(app.db_path) as connection:
            assert connection.execute("SELECT count(*) FROM axes_accessattempt").fetchone() == (0,)
        assert all(name != "mallory" for _, name, _, _ in accounts(app.db_path))
        # Said once: the page read again is the plain login page.
        page.reload()
        expect(page.get_by_role("link", name=BUTTON)).to_be_visible()
        expect(page.get_by_role("alert")).to_have_count(0)
    assert problems == []
