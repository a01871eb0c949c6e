"""Which upstreams exist, and which one a conversation talks to.

The default provider comes from the environment (``LLM_API_BASE``, ``LLM_API_KEY``,
``LLM_API_PROTOCOL``, ``LLM_MODELS``); more are rows of ``Provider``, added in the admin.
Keys never enter the database or a page: a provider names the environment variable that
holds its key, read when a request is made, and only one ``provider_rules`` allows (never the
server's own secrets, whatever the row says).

In forms a choice is one string: the bare model name for the default provider (so the values
that existed before providers keep working) and ``p<id>:<model>`` for the others.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings
from django.utils.translation import gettext

from chat import provider_rules
from chat.exceptions import ClientError
from chat.models import Conversation, Provider
from chat.rendering.i18n import upstream_message

logger = logging.getLogger(__name__)

DEFAULT_KEY = "default"
_CHOICE_RE = re.compile(r"^p(\d+):(.+)$", re.DOTALL)


def choice_value(provider_id: int | None, model: str) -> str:
    """The one string a picker option carries for a provider and model."""
    return model if provider_id is None else f"p{provider_id}:{model}"


def conversation_choice(conversation: Conversation) -> str:
    """The picker value of a conversation's provider and model."""
    return choice_value(conversation.provider_id, conversation.model)


@dataclass(frozen=True, slots=True)
class Upstream:
    """One provider as plain data, safe to hand to async code (no ORM, no key)."""

    key: str  # DEFAULT_KEY or the Provider's primary key as text
    name: str
    protocol: str
    base_url: str
    models: tuple[str, ...]
    api_key_env: str = ""  # "" with key=DEFAULT_KEY: the key from LLM_API_KEY/DASHSCOPE_API_KEY
    include_usage: bool = True
    incremental: bool = True
    simulator: bool = False

    @property
    def provider_id(self) -> int | None:
        return None if self.key == DEFAULT_KEY else int(self.key)

    def api_key(self) -> str | None:
        """Read when a request is made, so a key lives only in the environment. A variable the
        rules refuse (``provider_rules``: a server secret, not a key's name) gives None, so a
        row that got past ``problem`` still sends no secret."""
        if self.key == DEFAULT_KEY:
            return settings.LLM_API_KEY or None
        if not self.api_key_env:
            return None  # a server without keys (a local vLLM, Ollama, llama.cpp)
        value, refused = provider_rules.read_key(self.api_key_env)
        if refused:
            logger.error("provider %s (#%s): its key is not sent: %s", self.name, self.key, refused)
        return value

    def problem(self) -> str | None:
        """Why this provider cannot be asked, for the person sending, or None. Never names the
        key variable (users need not know the server's environment); the log does, for staff."""
        if provider_rules.base_url_problem(self.base_url):
            logger.warning("provider %s (#%s): base URL is not http(s)", self.name, self.key)
            return gettext(
                "The provider “%(name)s” has an address this server does not use (only http "
                "and https): ask an administrator to fix it."
            ) % {"name": self.name}
        if self.key == DEFAULT_KEY or not self.api_key_env:
            return None
        value, refused = provider_rules.read_key(self.api_key_env)
        if refused:
            logger.warning(
                "provider %s (#%s): key variable %s refused: %s",
                self.name, self.key, self._variable_for_log(), refused,
            )  # fmt: skip
            return gettext(
                "The provider “%(name)s” is not allowed to use the API key it names: ask an "
                "administrator to fix it."
            ) % {"name": self.name}
        if value is None:
            logger.warning(
                "provider %s (#%s): key variable %s is not set on this server",
                self.name, self.key, self._variable_for_log(),
            )  # fmt: skip
            return gettext(
                "The provider “%(name)s” has no API key on this server: ask an administrator "
                "to set it."
            ) % {"name": self.name}
        return None

    def _variable_for_log(self) -> str:
        """The key variable's name for the log, unless it is no name (maybe a pasted key)."""
        if provider_rules.VARIABLE_NAME.match(self.api_key_env):
            return self.api_key_env
        return "(not a variable name)"

    def choice(self, model: str) -> str:
        return choice_value(self.provider_id, model)

    @property
    def host(self) -> str:
        """What is measured or asked, for labels: the host, never credentials or the key."""
        if self.simulator:
            return "offline simulator"
        return urlsplit(self.base_url).netloc.rpartition("@")[2] or self.base_url


def _default_name() -> str:
    if settings.LLM_PROVIDER_NAME:
        return settings.LLM_PROVIDER_NAME
    if settings.LLM_SIMULATOR:
        return "Offline simulator"
    url = urlsplit(settings.LLM_API_BASE)
    if (url.hostname or "").endswith(".aliyuncs.com"):
        return "DashScope" if settings.LLM_API_PROTOCOL == "dashscope" else "DashScope (compatible)"
    return url.netloc.rpartition("@")[2] or "Default"


def default_upstream() -> Upstream:
    return Upstream(
        key=DEFAULT_KEY,
        name=_default_name(),
        protocol=settings.LLM_API_PROTOCOL,
        base_url=settings.LLM_API_BASE,
        models=tuple(settings.LLM_MODELS),
        include_usage=settings.LLM_INCLUDE_USAGE,
        incremental=settings.LLM_INCREMENTAL_OUTPUT,
        simulator=settings.LLM_SIMULATOR,
    )


def from_provider(provider: Provider) -> Upstream:
    return Upstream(
        key=str(provider.pk),
        name=provider.name,
        protocol=provider.protocol,
        base_url=provider.base_url.rstrip("/"),
        models=tuple(provider.model_names),
        api_key_env=provider.api_key_env,
        include_usage=provider.include_usage,
        incremental=provider.incremental_output,
    )


def all_upstreams() -> list[Upstream]:
    """The picker's groups: the default provider first, then enabled ones in admin order."""
    return [default_upstream(), *(from_provider(p) for p in Provider.objects.filter(enabled=True))]


def upstream_for(provider_id: int | None) -> Upstream:
    """The upstream a conversation uses; a deleted or disabled provider is a clear error."""
    if provider_id is None:
        return default_upstream()
    return upstream_of(provider_id, Provider.objects.filter(pk=provider_id).first())


def upstream_of(provider_id: int | None, provider: Provider | None) -> Upstream:
    """``upstream_for``, given the provider row already read (``select_related``): no query."""
    if provider_id is None:
        return default_upstream()
    if provider is None or not provider.enabled:
        raise ClientError(
            gettext("This conversation's provider was removed or disabled: pick another model.")
        )
    return from_provider(provider)


def parse_choice(value: str) -> tuple[Upstream, str]:
    """A picker value → (upstream, model), or ``ClientError`` if it names nothing offered."""
    value = value.strip()
    match = _CHOICE_RE.match(value)
    upstream: Upstream | None = None
    model = value
    if match:
        provider = Provider.objects.filter(pk=int(match[1]), enabled=True).first()
        if provider is not None:
            upstream, model = from_provider(provider), match[2]
    if upstream is None:
        upstream = default_upstream()
    if model not in upstream.models:
        raise ClientError(gettext("Unknown model “%(model)s”.") % {"model": value})
    return upstream, model


def picker(
    selected: str = "", allows: Callable[[int | None, str], bool] | None = None
) -> list[dict[str, object]]:
    """Option groups for a model ``<select>``: one per provider, labelled by its name.
    ``allows(provider_id, model)``: only the models the user may use (``accounts.access``)."""
    groups: list[dict[str, object]] = []
    for upstream in all_upstreams():
        options = [
            {"value": upstream.choice(m), "label": m, "selected": upstream.choice(m) == selected}
            for m in upstream.models
            if allows is None or allows(upstream.provider_id, m)
        ]
        if not options and allows is not None:  # a provider the user may not use at all
            continue
        label = upstream_message(upstream.name)  # "Offline simulator" in the reader's language
        groups.append({"label": label, "options": options, "simulator": upstream.simulator})
    return groups
