"""Per-group access: which providers and models a group's members may use, and daily token
limits per user and per group over ``CHAT_DAILY_TOKEN_LIMIT`` (``chat.accounts.access``).

Set through the real admin; the picker offers only what the user may use; the server refuses
the rest (the settings form, the landing, a comparison, a turn) saying so, before anything is
saved or sent upstream. The last tests do that on a real server over real websockets.
"""

from __future__ import annotations

import html
import os
import re
import sqlite3
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from django.contrib.auth.models import Group, User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from pytest_django.fixtures import Settings

from chat.accounts import access, usage
from chat.exceptions import ClientError
from chat.generation.turns import create_turn
from chat.models import Conversation, DailyUsage, GroupAccess, Message, Provider, UserAllowance
from chat.owners import Owner
from tests.support.app import App, manage, start_app
from tests.support.compare_runs import press_run
from tests.support.inbox import ALERT, Inbox
from tests.support.processes import stop_process
from tests.support.simulator import Simulator
from tests.support.sockets import send
from tests.support.visitor import PASSWORD, compare_socket, signed_in
from tests.support.waiting import until

MODELS = ["qwen-plus", "qwen-turbo", "qwen-max", "qwq-plus"]  # LLM_MODELS' default


def user_in(name: str, *groups: Group) -> User:
    user = User.objects.create_user(name, password=PASSWORD)
    user.groups.add(*groups)
    return user


def group_with(
    name: str,
    models: str = "",
    *,
    default_provider: bool = False,
    providers: tuple[Provider, ...] = (),
    limit: int | None = None,
) -> Group:
    group = Group.objects.create(name=name)
    rules = GroupAccess.objects.create(
        group=group, default_provider=default_provider, model_list=models, daily_token_limit=limit
    )
    rules.providers.set(providers)
    return group


def local_provider() -> Provider:
    return Provider.objects.create(
        name="Local", base_url="http://127.0.0.1:9/v1", model_list="llama3\nmistral"
    )


def signed_in_client(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def picker_values(page: str) -> list[str]:
    """The values the first model picker of a page offers."""
    select = re.search(r'<select name="model">(.*?)</select>', page, re.S)
    assert select, "no model picker on the page"
    return re.findall(r'<option value="([^"]*)"', select.group(1))


def alerts_in(frames_html: str) -> list[str]:
    return [html.unescape(text) for text in ALERT.findall(frames_html)]


# --- The admin ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_an_administrator_gives_a_group_access_in_the_groups_admin_page() -> None:
    local = local_provider()
    admin = signed_in_client(User.objects.create_superuser("root", password=PASSWORD))
    form = admin.get("/admin/auth/group/add/").content.decode()
    assert 'name="access-0-model_list"' in form and "every provider is allowed" in form
    response = admin.post(
        "/admin/auth/group/add/",
        {
            "name": "Interns",
            "access-TOTAL_FORMS": "1",
            "access-INITIAL_FORMS": "0",
            "access-MIN_NUM_FORMS": "0",
            "access-MAX_NUM_FORMS": "1",
            "access-0-default_provider": "on",
            "access-0-providers": [str(local.pk)],
            "access-0-model_list": "qwen-turbo\nllama*",
            "access-0-daily_token_limit": "5000",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    rules = GroupAccess.objects.get(group__name="Interns")
    assert rules.default_provider and list(rules.providers.all()) == [local]
    assert (rules.model_list, rules.daily_token_limit) == ("qwen-turbo\nllama*", 5000)
    intern = user_in("ida", rules.group)
    allowed = access.of_user(intern.pk)
    assert allowed.token_limit == 5000
    assert [allowed.allows(None, m) for m in MODELS] == [False, True, False, False]
    assert allowed.allows(local.pk, "llama3") and not allowed.allows(local.pk, "mistral")


@pytest.mark.django_db
def test_an_administrator_sets_a_users_own_limit_in_the_users_admin_page() -> None:
    admin = signed_in_client(User.objects.create_superuser("root", password=PASSWORD))
    ada = user_in("ada")
    page = html.unescape(admin.get(f"/admin/auth/user/{ada.pk}/change/").content.decode())
    assert 'name="allowance-0-daily_token_limit"' in page
    assert "Empty: their groups' limit, else CHAT_DAILY_TOKEN_LIMIT; 0: no limit." in page
    UserAllowance.objects.create(user=ada, daily_token_limit=0)
    assert access.of_user(ada.pk).token_limit == 0


# --- The rules ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_without_rules_everyone_may_use_everything() -> None:
    ada = user_in("ada", Group.objects.create(name="Plain group"))  # a group without rules
    assert access.of_user(ada.pk).rules is None
    assert access.of_user(None) is access.ANONYMOUS


@pytest.mark.django_db
def test_a_member_of_several_groups_may_use_what_any_of_them_allows() -> None:
    local = local_provider()
    turbo = group_with("Turbo", "qwen-turbo", default_provider=True)
    llamas = group_with("Llamas", "llama?", providers=(local,))
    ada = user_in("ada", turbo, llamas)
    allowed = access.of_user(ada.pk)
    assert [allowed.allows(None, m) for m in MODELS] == [False, True, False, False]
    assert allowed.allows(local.pk, "llama3") and not allowed.allows(local.pk, "mistral")
    # A group naming no provider and no model allows everything: the union is everything.
    ada.groups.add(group_with("Everything"))
    assert access.of_user(ada.pk).allows(local.pk, "mistral")


@pytest.mark.django_db
def test_picked_providers_only_and_models_of_every_provider_when_none_is_picked() -> None:
    local = local_provider()
    ada = user_in("ada", group_with("Local only", providers=(local,)))
    allowed = access.of_user(ada.pk)
    assert allowed.allows(local.pk, "mistral") and not allowed.allows(None, "qwen-plus")
    bob = user_in("bob", group_with("Plus anywhere", "qwen-plus, mistral"))
    allowed = access.of_user(bob.pk)
    assert allowed.allows(None, "qwen-plus") and allowed.allows(local.pk, "mistral")
    assert not allowed.allows(None, "qwen-max")


@pytest.mark.django_db
def test_users_in_no_group_with_rules_follow_the_default_and_superusers_are_free(
    settings: Settings,
) -> None:
    group_with("Turbo", "qwen-turbo")
    bob = user_in("bob")
    assert access.of_user(bob.pk).rules is None
    settings.CHAT_ACCESS_DEFAULT = "deny"
    assert access.of_user(bob.pk).rules == ()
    root = User.objects.create_superuser("root", password=PASSWORD)
    root.groups.add(Group.objects.get(name="Turbo"))
    assert access.of_user(root.pk).rules is None
    assert access.of_user(None).rules is None  # the demo


# --- The picker and the forms ------------------------------------------------------------------


@pytest.mark.django_db
def test_the_pickers_offer_only_what_the_user_may_use() -> None:
    local = local_provider()
    ada = user_in("ada", group_with("Turbo", "qwen-t*", default_provider=True))
    client = signed_in_client(ada)
    assert picker_values(client.get("/").content.decode()) == ["qwen-turbo"]
    conversation = Conversation.objects.create(user=ada, model="qwen-turbo")
    page = client.get(f"/c/{conversation.pk}/").content.decode()
    assert picker_values(page) == ["qwen-turbo"] and "Local" not in page
    assert picker_values(client.get("/compare/").content.decode()) == ["qwen-turbo"]
    # Someone in no group with rules is offered everything, another provider's too.
    bob = signed_in_client(user_in("bob"))
    others = [f"p{local.pk}:llama3", f"p{local.pk}:mistral"]
    assert picker_values(bob.get("/").content.decode()) == [*MODELS, *others]


@pytest.mark.django_db
def test_a_new_chat_starts_on_a_model_the_user_may_use() -> None:
    ada = user_in("ada", group_with("Max", "qwen-max", default_provider=True))
    response = signed_in_client(ada).post("/c/new/")
    assert response.status_code == 302
    assert Conversation.objects.get(user=ada).model == "qwen-max"  # not LLM_MODELS[0]


@pytest.mark.django_db
def test_the_settings_form_refuses_a_forbidden_model_and_keeps_the_rest() -> None:
    ada = user_in("ada", group_with("Turbo", "qwen-turbo"))
    conversation = Conversation.objects.create(user=ada, model="qwen-turbo")
    response = signed_in_client(ada).post(
        f"/c/{conversation.pk}/settings/",
        {"model": "qwen-max", "system_prompt": "Kept", "stream": "on"},
        headers={"HX-Request": "true"},
    )
    shown = html.unescape(response.content.decode())
    host = urlsplit("http://127.0.0.1:9/v1").netloc  # the tests' default provider
    assert f"You may not use the model “qwen-max” of {host}: pick another model." in shown
    conversation.refresh_from_db()
    assert (conversation.model, conversation.system_prompt) == ("qwen-turbo", "Kept")


@pytest.mark.django_db
def test_the_settings_form_refuses_a_provider_the_user_may_not_use() -> None:
    local = local_provider()
    ada = user_in("ada", group_with("Default only", default_provider=True))
    conversation = Conversation.objects.create(user=ada, model="qwen-plus")
    response = signed_in_client(ada).post(
        f"/c/{conversation.pk}/settings/",
        {"model": f"p{local.pk}:llama3", "stream": "on"},
        headers={"HX-Request": "true"},
    )
    shown = html.unescape(response.content.decode())
    assert "You may not use the model “llama3” of Local: pick another model." in shown
    conversation.refresh_from_db()
    assert (conversation.provider_id, conversation.model) == (None, "qwen-plus")


@pytest.mark.django_db
def test_the_landing_refuses_a_forbidden_model_and_creates_nothing() -> None:
    ada = user_in("ada", group_with("Turbo", "qwen-turbo"))
    response = signed_in_client(ada).post("/c/new/", {"message": "Hi", "model": "qwen-max"})
    assert "You may not use the model “qwen-max”" in html.unescape(response.content.decode())
    assert not Conversation.objects.exists()


@pytest.mark.django_db
def test_someone_allowed_nothing_is_told_to_ask_an_administrator(settings: Settings) -> None:
    settings.CHAT_ACCESS_DEFAULT = "deny"
    ada = user_in("ada")
    conversation = Conversation.objects.create(user=ada, model="qwen-plus")
    owner = Owner(user_id=ada.pk, session_key="")
    with pytest.raises(ClientError) as refused:
        create_turn(owner, conversation.pk, "Hello", set())
    assert refused.value.message == (
        "Your account may not use any model yet: ask an administrator for access."
    )
    assert not Message.objects.exists() and not DailyUsage.objects.exists()


# --- Daily token limits ------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("setting", "groups", "own", "limit"),
    [
        pytest.param(100, [], None, 100, id="the setting alone"),
        pytest.param(100, [50], None, 50, id="a group's over the setting"),
        pytest.param(50, [80, 200], None, 200, id="the most generous group"),
        pytest.param(50, [80, 0], None, 0, id="a group without limit is the most generous"),
        pytest.param(100, [None], None, 100, id="a group without a say: the setting"),
        pytest.param(100, [500], 50, 50, id="the user's own over the group's"),
        pytest.param(50, [50], 0, 0, id="the user's own 0: no limit"),
        pytest.param(0, [], 50, 50, id="the user's own without the setting"),
    ],
)
def test_the_daily_limit_is_the_users_else_their_groups_else_the_setting(
    settings: Settings, setting: int, groups: list[int | None], own: int | None, limit: int
) -> None:
    settings.CHAT_DAILY_TOKEN_LIMIT = setting
    ada = user_in("ada", *(group_with(f"g{n}", limit=g) for n, g in enumerate(groups)))
    if own is not None:
        UserAllowance.objects.create(user=ada, daily_token_limit=own)
    assert access.of_user(ada.pk).token_limit == limit
    # A turn refuses past that limit (60 tokens used today), and only then.
    DailyUsage.objects.create(user=ada, day=usage.today(), prompt_tokens=40, completion_tokens=20)
    conversation = Conversation.objects.create(user=ada, model="qwen-plus")
    owner = Owner(user_id=ada.pk, session_key="")
    if limit and limit <= 60:
        with pytest.raises(ClientError) as refused:
            create_turn(owner, conversation.pk, "Hello", set())
        assert refused.value.message == (
            f"You have used today's {limit} tokens (60); you can ask again after midnight UTC."
        )
        with pytest.raises(ClientError):
            usage.check_allowance(ada.pk)
        assert not Message.objects.exists()
    else:
        create_turn(owner, conversation.pk, "Hello", set())
        usage.check_allowance(ada.pk)
        assert Message.objects.count() == 2


@pytest.mark.django_db
def test_a_blank_own_limit_inherits(settings: Settings) -> None:
    settings.CHAT_DAILY_TOKEN_LIMIT = 100
    ada = user_in("ada", group_with("g", limit=30))
    UserAllowance.objects.create(user=ada, daily_token_limit=None)
    assert access.of_user(ada.pk).token_limit == 30


# --- What a turn costs -------------------------------------------------------------------------


def queries_of_a_turn(user: User, text: str) -> int:
    """The queries one more turn of the user's costs (its answer settled first)."""
    DailyUsage.objects.get_or_create(user=user, day=usage.today())  # not the day's first
    conversation = Conversation.objects.filter(user=user).first() or Conversation.objects.create(
        user=user, model="qwen-plus"
    )
    Message.objects.filter(conversation=conversation).update(status="complete")
    with CaptureQueriesContext(connection) as queries:
        create_turn(Owner(user_id=user.pk, session_key=""), conversation.pk, text, set())
    return len(queries)


@pytest.mark.django_db
def test_a_turn_reads_access_with_its_conversation_and_group_rules_in_one_more_query(
    settings: Settings,
) -> None:
    """Turns are the hot path: what decides for a user without group rules (superuser or
    not, their own limit) comes with the conversation's query; group rules take one query."""
    settings.CHAT_RATE_LIMIT = 30
    settings.CHAT_DAILY_TOKEN_LIMIT = 1_000_000
    baseline = queries_of_a_turn(user_in("bob"), "Hello")
    ada = user_in("ada")
    UserAllowance.objects.create(user=ada, daily_token_limit=10_000)
    assert queries_of_a_turn(ada, "Hello") == baseline
    ada.groups.add(group_with("Plus", "qwen-plus"))
    assert queries_of_a_turn(ada, "Again") == baseline + 1


# --- On a real server, over real websockets ----------------------------------------------------


@pytest.fixture(scope="module")
def restricted(simulator: Simulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    """The app with logins; ada is in a group allowed qwen-turbo only."""
    tmp = tmp_path_factory.mktemp("access")
    env = {"LLM_API_BASE": simulator.base_url, "CHAT_REQUIRE_LOGIN": "1"}
    instance, process = start_app(tmp, env)
    create = (
        "from django.contrib.auth.models import Group, User\n"
        "from chat.models import GroupAccess\n"
        "group = Group.objects.create(name='Interns')\n"
        "GroupAccess.objects.create(group=group, model_list='qwen-turbo')\n"
        f"User.objects.create_user('ada', password={PASSWORD!r}).groups.add(group)\n"
    )
    manage(dict(os.environ), instance.db_path, "shell", "-c", create)
    try:
        yield instance
    finally:
        stop_process(process)


def refusal(simulator: Simulator, model: str) -> str:
    host = urlsplit(simulator.base_url).netloc
    return f"You may not use the model “{model}” of {host}: pick another model."


@pytest.mark.live
async def test_a_send_in_a_chat_on_a_forbidden_model_is_refused_over_the_socket(
    restricted: App, simulator: Simulator
) -> None:
    ada = signed_in(restricted, "ada")
    try:
        conversation = ada.new_conversation()
        assert ada.export(conversation)["model"] == "qwen-turbo"  # the one she may use
        # Switched to a model she may not use behind the form's back (or before the rule).
        with sqlite3.connect(restricted.db_path) as db:
            db.execute(
                "UPDATE chat_conversation SET model = 'qwen-max' WHERE id = ?", (conversation,)
            )
        async with ada.socket(conversation) as ws:
            inbox = Inbox(ws)
            await send(ws, "Forbidden [t-access-max]")
            alerts = await until(inbox.alerts, "the refusal")
            assert alerts == [refusal(simulator, "qwen-max")]
            assert ada.export(conversation)["messages"] == []
            with sqlite3.connect(restricted.db_path) as db:
                assert db.execute("SELECT COUNT(*) FROM chat_dailyusage").fetchone() == (0,)
            with pytest.raises(LookupError):
                simulator.request_for("[t-access-max]")
            # Back on her model, the same socket is answered.
            ada.post(f"/c/{conversation}/settings/", {"model": "qwen-turbo", "stream": "on"})
            await send(ws, "Allowed [t-access-turbo]\n#sim tokens=4 tps=200 ttft=0.01")
            await until(lambda: inbox.first_answer() is not None, "an answer")
            inbox.stop()
        assert [m["role"] for m in ada.export(conversation)["messages"]] == ["user", "assistant"]
    finally:
        ada.close()


@pytest.mark.live
async def test_a_comparison_naming_a_forbidden_model_is_refused_over_the_socket(
    restricted: App, simulator: Simulator
) -> None:
    ada = signed_in(restricted, "ada")
    try:
        async with compare_socket(ada) as ws:
            run = await press_run(ws, {"prompt": "Forbidden [t-access-cmp]", "model": "qwen-max"})
            assert alerts_in(run.html()) == [refusal(simulator, "qwen-max")]
            setups = {
                "pairing": "setups",
                "model": "qwen-turbo",
                "model_a": "qwen-turbo",
                "model_b": "qwq-plus",
            }
            run = await press_run(ws, {"prompt": "Forbidden [t-access-cmp]", **setups})
            assert alerts_in(run.html()) == [refusal(simulator, "qwq-plus")]
        with sqlite3.connect(restricted.db_path) as db:
            assert db.execute("SELECT COUNT(*) FROM chat_comparisonrun").fetchone() == (0,)
            count = "SELECT COUNT(*) FROM chat_conversation WHERE purpose = 'compare'"
            assert db.execute(count).fetchone() == (0,)
        with pytest.raises(LookupError):
            simulator.request_for("[t-access-cmp]")
    finally:
        ada.close()
