"""Share links over HTTP: only the owner makes, lists and revokes them; anyone holding a live
one sees the run or conversation read-only without an account, and nothing else of the site;
revoked and expired links are the same 404 as unknown ones."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone
from pytest_django.fixtures import Settings

from chat.compare.runs import create_run, create_trial
from chat.models import ComparisonRun, Conversation, Message, ShareLink
from chat.owners import Owner
from chat.sharing import links
from tests.support.visitor import client_signed_in

pytestmark = pytest.mark.django_db

PROVIDER = "Acme Cloud"
HOST = "api.acme.example"


def finished_run(user: User) -> ComparisonRun:
    """A run of one trial whose two answers are saved, as a finished run leaves them."""
    owner = Owner(user_id=user.pk, session_key="")
    run = create_run(owner, "Why stream? [t-share]", "qwen-plus", 1)
    run.upstream = f"{PROVIDER} ({HOST})"
    run.save(update_fields=["upstream"])
    for turn in create_trial(owner, run, 1, set()):
        mode = "on" if turn.answer.conversation_id == run.stream_conversation_id else "off"
        Message.objects.filter(pk=turn.answer.id).update(
            status="complete",
            content=f"The answer with streaming {mode}.",
            provider_name=PROVIDER,
            ttft_ms=50.0,
            total_ms=400.0,
            completion_tokens=20,
        )
    return run


def chat_of(user: User) -> Conversation:
    conversation = Conversation.objects.create(user=user, model="qwen-plus", title="Rivers")
    Message.objects.create(conversation=conversation, role="user", content="Tell me about rivers")
    Message.objects.create(
        conversation=conversation,
        role="assistant",
        status="complete",
        content="Rivers flow downhill.",
        model="qwen-plus",
        provider_name=PROVIDER,
    )
    return conversation


def share_url(response_html: str) -> str:
    """The newest link in a share panel, as the owner copies it (its path)."""
    match = re.search(r'data-share-link="https?://[^/"]+(/s/[\w-]+/)"', response_html)
    assert match, response_html
    return match.group(1)


def test_a_token_is_long_random_and_url_safe() -> None:
    tokens = {links.new_token() for _ in range(100)}
    assert len(tokens) == 100
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{32}", token) for token in tokens)


def test_the_owner_shares_a_run_and_anyone_sees_it_read_only(login_required: Settings) -> None:
    owner, ada = client_signed_in("ada")
    run = finished_run(ada)
    panel = owner.get(f"/s/run/{run.pk}/", headers={"HX-Request": "true"})
    assert panel.status_code == 200 and "Create link" in panel.content.decode()
    created = owner.post(f"/s/run/{run.pk}/new/", {"expires": "7d"}, headers={"HX-Request": "true"})
    html = created.content.decode()
    assert created.status_code == 200 and 'data-views="0"' in html and "Revoke" in html
    link = ShareLink.objects.get()
    assert link.run_id == run.pk and link.user_id == ada.pk and not link.show_providers
    assert link.expires_at is not None
    assert timedelta(days=6, hours=23) < link.expires_at - timezone.now() <= timedelta(days=7)
    url = share_url(html)

    stranger = Client()  # no account, with CHAT_REQUIRE_LOGIN on
    page = stranger.get(url)
    body = page.content.decode()
    assert page.status_code == 200
    assert "The answer with streaming on." in body and "The answer with streaming off." in body
    assert "Shared comparison" in body and "Why stream? [t-share]" in body
    assert 'data-mode="stream"' in body and 'data-mode="nostream"' in body
    assert '<meta name="robots" content="noindex, nofollow">' in body
    assert page["X-Robots-Tag"] == "noindex, nofollow"
    assert page["Referrer-Policy"] == "no-referrer"
    assert "no-store" in page["Cache-Control"] and "private" in page["Cache-Control"]
    assert "Content-Security-Policy" in page
    for absent in ("ws-connect", PROVIDER, HOST, f"/compare/{run.pk}", "compare-form",
                   "/c/", "Create link", "Regenerate", "Retry"):  # fmt: skip
        assert absent not in body, absent
    # The shared run stays private everywhere else.
    assert stranger.get(f"/compare/{run.pk}/").status_code == 302  # to the sign-in page
    _, grace = client_signed_in("grace")
    other = Client()
    other.force_login(grace)
    assert other.get(f"/compare/{run.pk}/").status_code == 404
    assert other.get(url).status_code == 200  # the link itself works for anyone


def test_every_view_counts_and_the_owner_sees_the_count(login_required: Settings) -> None:
    owner, ada = client_signed_in("ada")
    run = finished_run(ada)
    link = links.create(Owner(user_id=ada.pk, session_key=""), run=run)
    for _ in range(3):
        assert Client().get(f"/s/{link.token}/").status_code == 200
    link.refresh_from_db()
    assert link.views == 3
    panel = owner.get(f"/s/run/{run.pk}/", headers={"HX-Request": "true"}).content.decode()
    assert 'data-views="3"' in panel and "3 views" in panel


def test_provider_names_show_only_when_the_owner_allows(login_required: Settings) -> None:
    owner, ada = client_signed_in("ada")
    run = finished_run(ada)
    owner.post(
        f"/s/run/{run.pk}/new/",
        {"expires": "never", "show_providers": "on"},
        headers={"HX-Request": "true"},
    )
    link = ShareLink.objects.get()
    assert link.show_providers and link.expires_at is None
    body = Client().get(f"/s/{link.token}/").content.decode()
    assert PROVIDER in body and HOST in body


@pytest.mark.parametrize(
    "kill",
    [
        pytest.param(lambda link: setattr(link, "revoked_at", timezone.now()), id="revoked"),
        pytest.param(
            lambda link: setattr(link, "expires_at", timezone.now() - timedelta(seconds=1)),
            id="expired",
        ),
    ],
)
def test_a_dead_link_is_the_same_404_as_an_unknown_one(
    login_required: Settings, kill: object
) -> None:
    _, ada = client_signed_in("ada")
    link = links.create(Owner(user_id=ada.pk, session_key=""), run=finished_run(ada))
    assert Client().get(f"/s/{link.token}/").status_code == 200
    kill(link)  # type: ignore[operator]
    link.save(update_fields=["revoked_at", "expires_at"])
    dead = Client().get(f"/s/{link.token}/")
    unknown = Client().get(f"/s/{links.new_token()}/")
    assert dead.status_code == unknown.status_code == 404
    assert dead.content == unknown.content
    link.refresh_from_db()
    assert link.views == 1  # a dead link's visits do not count


def test_revoke_from_the_panel(login_required: Settings) -> None:
    owner, ada = client_signed_in("ada")
    run = finished_run(ada)
    link = links.create(Owner(user_id=ada.pk, session_key=""), run=run)
    response = owner.post(f"/s/links/{link.pk}/revoke/", headers={"HX-Request": "true"})
    assert response.status_code == 200 and link.token not in response.content.decode()
    assert Client().get(f"/s/{link.token}/").status_code == 404
    # Without htmx the form lands on the panel's own page.
    again = links.create(Owner(user_id=ada.pk, session_key=""), run=run)
    plain = owner.post(f"/s/links/{again.pk}/revoke/")
    assert plain.status_code == 302 and plain["Location"] == f"/s/run/{run.pk}/"
    page = owner.get(plain["Location"]).content.decode()
    assert "Share this comparison" in page and "No share links yet." in page


def test_nobody_else_makes_lists_or_revokes_links(login_required: Settings) -> None:
    _, ada = client_signed_in("ada")
    run = finished_run(ada)
    chat = chat_of(ada)
    link = links.create(Owner(user_id=ada.pk, session_key=""), run=run)
    grace, _ = client_signed_in("grace")
    assert grace.get(f"/s/run/{run.pk}/").status_code == 404
    assert grace.post(f"/s/run/{run.pk}/new/", {"expires": "never"}).status_code == 404
    assert grace.get(f"/s/c/{chat.pk}/").status_code == 404
    assert grace.post(f"/s/c/{chat.pk}/new/", {"expires": "never"}).status_code == 404
    assert grace.post(f"/s/links/{link.pk}/revoke/").status_code == 404
    assert ShareLink.objects.count() == 1
    link.refresh_from_db()
    assert link.revoked_at is None
    # Without an account the owner's actions need a sign-in, as every other page.
    assert Client().post(f"/s/run/{run.pk}/new/", {"expires": "never"}).status_code == 302


def test_an_unknown_expiry_is_refused(login_required: Settings) -> None:
    owner, ada = client_signed_in("ada")
    run = finished_run(ada)
    assert owner.post(f"/s/run/{run.pk}/new/", {"expires": "forever"}).status_code == 400
    assert not ShareLink.objects.exists()


def test_a_shared_conversation_shows_its_messages_and_no_controls(login_required: Settings) -> None:
    owner, ada = client_signed_in("ada")
    chat = chat_of(ada)
    page = owner.get(f"/c/{chat.pk}/").content.decode()
    assert f'hx-get="/s/c/{chat.pk}/"' in page  # the Share button on the chat page
    created = owner.post(f"/s/c/{chat.pk}/new/", {"expires": "1d"}, headers={"HX-Request": "true"})
    url = share_url(created.content.decode())
    response = Client().get(url)
    body = response.content.decode()
    assert response.status_code == 200
    assert "Shared conversation" in body and "Rivers" in body
    assert "Tell me about rivers" in body and "Rivers flow downhill." in body
    assert 'data-role="user"' in body and 'data-role="assistant"' in body
    assert response["X-Robots-Tag"] == "noindex, nofollow"
    for absent in ("ws-connect", 'id="composer"', 'name="message"', "Edit", "Regenerate",
                   "New chat", "sidebar", PROVIDER, f"/c/{chat.pk}/"):  # fmt: skip
        assert absent not in body, absent


def test_a_deleted_conversation_is_no_longer_shared(login_required: Settings) -> None:
    _, ada = client_signed_in("ada")
    chat = chat_of(ada)
    link = links.create(Owner(user_id=ada.pk, session_key=""), conversation=chat)
    assert Client().get(f"/s/{link.token}/").status_code == 200
    Conversation.objects.filter(pk=chat.pk).update(deleted_at=timezone.now())
    assert Client().get(f"/s/{link.token}/").status_code == 404


def test_the_demo_shares_by_session(client: Client) -> None:
    """Without accounts the browser session owns the run, and its links."""
    client.get("/compare/")
    owner = Owner(user_id=None, session_key=client.session.session_key or "")
    run = create_run(owner, "a demo run", "qwen-plus", 1)
    response = client.post(f"/s/run/{run.pk}/new/", {"expires": "30d"})
    assert response.status_code == 302
    link = ShareLink.objects.get()
    assert link.user_id is None and link.session_key == owner.session_key
    assert Client().get(f"/s/{link.token}/").status_code == 200
    assert Client().post(f"/s/links/{link.pk}/revoke/").status_code == 404
