"""Providers: the default from the environment, more from the admin, the grouped picker, the
per-conversation request options, and keys that never leave the environment."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from django.core.management import CommandError, call_command
from django.test import Client

from chat.exceptions import ClientError
from chat.generation.turns import create_turn, request_options
from chat.models import Conversation, Message, Provider
from chat.owners import Owner

pytestmark = pytest.mark.django_db

SECRET = "sk-provider-Secret0123456789"


def new_chat(client: Client) -> Conversation:
    response = client.post("/c/new/")
    return Conversation.objects.get(pk=int(response["Location"].strip("/").split("/")[-1]))


def settings_post(client: Client, conversation: Conversation, **data: str) -> str:
    response = client.post(f"/c/{conversation.pk}/settings/", data, headers={"HX-Request": "true"})
    assert response.status_code == 200
    return response.content.decode()


@pytest.fixture
def local(monkeypatch: pytest.MonkeyPatch) -> Provider:
    monkeypatch.setenv("LOCAL_LLM_API_KEY", SECRET)
    return Provider.objects.create(
        name="Local vLLM",
        protocol="openai",
        base_url="http://127.0.0.1:9/v1",
        api_key_env="LOCAL_LLM_API_KEY",
        model_list="Qwen/Qwen3-8B, llama3:8b\nQwen/Qwen3-8B",
    )


def test_picker_groups_models_by_provider(client: Client, local: Provider) -> None:
    Provider.objects.create(name="Hidden", base_url="http://h/v1", model_list="x", enabled=False)
    conversation = new_chat(client)
    page = client.get(f"/c/{conversation.pk}/").content.decode()
    assert '<optgroup label="Local vLLM">' in page
    assert f'<option value="p{local.pk}:Qwen/Qwen3-8B">Qwen/Qwen3-8B</option>' in page
    assert f'<option value="p{local.pk}:llama3:8b">llama3:8b</option>' in page
    assert page.count(f'value="p{local.pk}:Qwen/Qwen3-8B"') == 1  # listed once
    assert '<option value="qwen-plus" selected>qwen-plus</option>' in page
    assert "Hidden" not in page
    assert SECRET not in page and "LOCAL_LLM_API_KEY" not in page


def test_a_conversation_remembers_its_provider_and_options(client: Client, local: Provider) -> None:
    conversation = new_chat(client)
    html = settings_post(
        client,
        conversation,
        model=f"p{local.pk}:llama3:8b",
        stream="on",
        temperature="0.7",
        top_p="",
        max_tokens="256",
        seed="42",
        enable_thinking="off",
    )
    conversation.refresh_from_db()
    assert (conversation.provider_id, conversation.model) == (local.pk, "llama3:8b")
    assert request_options(conversation) == {
        "temperature": 0.7,
        "max_tokens": 256,
        "seed": 42,
        "enable_thinking": False,
    }
    assert f'<option value="p{local.pk}:llama3:8b" selected>' in html
    assert 'value="0.7"' in html and '<option value="off" selected>Off</option>' in html
    # A new chat starts with the same choice.
    Message.objects.create(conversation=conversation, role="user", content="hi")
    fresh = new_chat(client)
    assert (fresh.provider_id, fresh.model, fresh.temperature) == (local.pk, "llama3:8b", 0.7)


def test_bad_options_are_reported_one_by_one_and_lose_nothing(client: Client) -> None:
    conversation = new_chat(client)
    html = settings_post(
        client,
        conversation,
        model="qwen-turbo",
        temperature="hot",
        top_p="1.5",
        max_tokens="0",
        seed="7",
        enable_thinking="maybe",
        system_prompt="Kept",
    )
    assert "Temperature must be a number, not “hot”." in html
    assert "Top p must be between 0 and 1." in html
    assert "Max tokens must be between 1 and 1e+06." in html
    assert "Thinking must be the model&#x27;s default, on or off." in html
    conversation.refresh_from_db()
    assert (conversation.model, conversation.seed, conversation.system_prompt) == (
        "qwen-turbo",
        7,
        "Kept",
    )
    assert conversation.temperature is None and conversation.enable_thinking is None


def test_a_model_of_a_disabled_provider_is_refused(client: Client, local: Provider) -> None:
    conversation = new_chat(client)
    local.enabled = False
    local.save()
    html = settings_post(client, conversation, model=f"p{local.pk}:llama3:8b")
    assert "Unknown model" in html
    conversation.refresh_from_db()
    assert conversation.provider_id is None


def test_sending_with_a_missing_key_says_so_without_naming_the_variable(
    client: Client, local: Provider, monkeypatch: pytest.MonkeyPatch
) -> None:
    conversation = new_chat(client)
    settings_post(client, conversation, model=f"p{local.pk}:llama3:8b")
    monkeypatch.delenv("LOCAL_LLM_API_KEY")
    owner = Owner(user_id=None, session_key=client.session.session_key)
    with pytest.raises(ClientError) as refused:
        create_turn(owner, conversation.pk, "Hello", set())
    assert refused.value.message == (
        "The provider “Local vLLM” has no API key on this server: ask an administrator to set it."
    )  # the server's environment is the administrator's business (the log names it)
    assert not conversation.messages.exists()  # nothing half-saved


def test_thinking_is_saved_but_never_sent_back(client: Client) -> None:
    conversation = new_chat(client)
    Message.objects.create(conversation=conversation, role="user", content="Q1")
    Message.objects.create(
        conversation=conversation, role="assistant", content="A1", reasoning="secret thoughts"
    )
    owner = Owner(user_id=None, session_key=client.session.session_key)
    turn = create_turn(owner, conversation.pk, "Q2", set())
    assert turn.context == [
        {"role": "user", "content": "Q1"},
        {"role": "assistant", "content": "A1"},
        {"role": "user", "content": "Q2"},
    ]


def test_set_provider_command_adds_and_updates() -> None:
    call_command("set_provider", "Ollama", base_url="http://127.0.0.1:11434/v1/", models="qwen3:8b")
    call_command(
        "set_provider",
        "Ollama",
        base_url="http://127.0.0.1:11434/v1",
        models="qwen3:8b, llama3:8b",
        protocol="openai",
        no_usage=True,
    )
    provider = Provider.objects.get(name="Ollama")
    assert provider.model_names == ["qwen3:8b", "llama3:8b"]
    assert provider.base_url == "http://127.0.0.1:11434/v1"
    assert provider.include_usage is False
    with pytest.raises(CommandError, match="NAME of an environment variable"):
        call_command("set_provider", "Bad", base_url="http://x/v1", models="m", api_key_env=SECRET)


def test_a_model_no_longer_offered_is_a_clear_error(client: Client, local: Provider) -> None:
    conversation = new_chat(client)
    settings_post(client, conversation, model=f"p{local.pk}:llama3:8b")
    local.delete()  # the conversation falls back to the default provider, without that model
    owner = Owner(user_id=None, session_key=client.session.session_key)
    with pytest.raises(ClientError, match="“llama3:8b” is no longer offered by"):
        create_turn(owner, conversation.pk, "Hello", set())


def settings_value(env: dict[str, str], name: str) -> subprocess.CompletedProcess[str]:
    code = (
        f"import django; django.setup(); from django.conf import settings; print(settings.{name})"
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("LLM_", "DASHSCOPE_"))}
    return subprocess.run(
        [sys.executable, "-c", code],
        env={**clean, "DJANGO_SETTINGS_MODULE": "chatsite.settings", "DEBUG": "1", **env},
        capture_output=True,
        text=True,
    )


@pytest.mark.parametrize(
    ("env", "base"),
    [
        ({}, "http://127.0.0.1:8000/simulator/v1"),
        ({"LLM_API_PROTOCOL": "dashscope"}, "http://127.0.0.1:8000/simulator/api/v1"),
        ({"DASHSCOPE_API_KEY": "k"}, "https://dashscope.aliyuncs.com/compatible-mode/v1"),
        (
            {"DASHSCOPE_API_KEY": "k", "LLM_API_PROTOCOL": "DashScope"},
            "https://dashscope.aliyuncs.com/api/v1",
        ),
    ],
)
def test_the_default_provider_follows_the_environment(env: dict[str, str], base: str) -> None:
    result = settings_value({"PORT": "8000", **env}, "LLM_API_BASE")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == base


def test_an_unknown_protocol_stops_the_app_with_a_clear_message() -> None:
    result = settings_value({"LLM_API_PROTOCOL": "grpc"}, "LLM_API_BASE")
    assert result.returncode != 0
    assert "LLM_API_PROTOCOL must be 'openai' or 'dashscope', not 'grpc'." in result.stderr


def test_providers_are_added_in_the_admin_by_key_variable_name(
    admin_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    form = {
        "name": "OpenAI",
        "protocol": "openai",
        "base_url": "https://api.openai.com/v1",
        "model_list": "gpt-4o-mini",
        "include_usage": "on",
        "incremental_output": "on",
        "enabled": "on",
        "position": "0",
    }
    refused = admin_client.post("/admin/chat/provider/add/", {**form, "api_key_env": SECRET})
    assert "never the key itself" in refused.content.decode()
    assert not Provider.objects.exists()
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    added = admin_client.post(
        "/admin/chat/provider/add/", {**form, "api_key_env": "OPENAI_API_KEY"}
    )
    assert added.status_code == 302
    listing = admin_client.get("/admin/chat/provider/").content.decode()
    assert "OPENAI_API_KEY" in listing and SECRET not in listing
    assert 'alt="True"' in listing  # the key variable is set on this server
