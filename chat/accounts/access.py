"""Who may use which providers and models, and how many tokens a day.

Set in the admin: a group's ``GroupAccess`` (its providers, its models, its daily token limit)
and a user's ``UserAllowance`` (their own daily token limit).

- Models. With no rules (no ``GroupAccess`` at all, the default) everyone may use every
  model. A user in groups with rules may use what any of those groups allows (the union);
  one in no such group every model, unless ``CHAT_ACCESS_DEFAULT=deny`` (then none).
  Superusers and the demo (no login) may always use every model.
- Daily tokens. The user's own limit if set, else the most generous limit their groups set
  (0, no limit, is the most generous), else ``CHAT_DAILY_TOKEN_LIMIT``. Blank means "no say",
  0 means "no limit", at every level; superusers are no exception.

Checked wherever a model is chosen (the settings form, the landing, the comparison) and
again on every turn (``chat.generation.turns``): the facts that decide for most users come
with the turn's conversation query (``query_annotations``), and a user's group rules, if they
have any, in one more query.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db.models import Exists, OuterRef, Subquery
from django.http import HttpRequest
from django.utils.translation import gettext

from chat.exceptions import ClientError
from chat.models import GroupAccess, UserAllowance
from chat.rendering.i18n import upstream_message

if TYPE_CHECKING:
    from chat.providers import Upstream


@dataclass(frozen=True, slots=True)
class Rule:
    """One group's access: providers (none named: all) and model patterns (none: all)."""

    default_provider: bool = False
    provider_ids: frozenset[int] = frozenset()
    patterns: tuple[str, ...] = ()

    def allows(self, provider_id: int | None, model: str) -> bool:
        if self.default_provider or self.provider_ids:
            named = (
                self.default_provider if provider_id is None else provider_id in self.provider_ids
            )
            if not named:
                return False
        return not self.patterns or any(fnmatchcase(model, p) for p in self.patterns)


@dataclass(frozen=True, slots=True)
class Access:
    """What one user may use. ``rules`` None: everything; () nothing; else any rule's."""

    rules: tuple[Rule, ...] | None = None
    token_limit: int = 0  # tokens a day; 0: no limit

    def allows(self, provider_id: int | None, model: str) -> bool:
        if self.rules is None:
            return True
        return any(rule.allows(provider_id, model) for rule in self.rules)


def patterns(model_list: str) -> tuple[str, ...]:
    """A ``GroupAccess``'s models: one per line or separated by commas, as a provider's."""
    names = (part.strip() for line in model_list.splitlines() for part in line.split(","))
    return tuple(dict.fromkeys(name for name in names if name))


ANONYMOUS = Access()  # the demo: every model; its sessions have no daily token count


def daily_limit(user_limit: int | None, group_limits: list[int | None]) -> int:
    """The user's own limit, else their groups' most generous (0: none), else the setting."""
    if user_limit is not None:
        return user_limit
    chosen = [limit for limit in group_limits if limit is not None]
    if chosen:
        return 0 if 0 in chosen else max(chosen)
    return int(settings.CHAT_DAILY_TOKEN_LIMIT)


def _without_rules(is_superuser: bool, user_limit: int | None) -> Access:
    """A user in no group with rules: the default, or everything for a superuser."""
    everything = is_superuser or settings.CHAT_ACCESS_DEFAULT != "deny"
    return Access(rules=None if everything else (), token_limit=daily_limit(user_limit, []))


def of_user(user_id: int | None) -> Access:
    """What this user may use, in one query (the user, their allowance, their groups' rules)."""
    if user_id is None:
        return ANONYMOUS
    rows = (
        get_user_model()
        .objects.filter(pk=user_id)
        .values_list(
            "is_superuser",
            "allowance__daily_token_limit",
            "groups__access__pk",
            "groups__access__default_provider",
            "groups__access__model_list",
            "groups__access__daily_token_limit",
            "groups__access__providers",
        )
    )
    is_superuser, user_limit = False, None
    rules: dict[int, tuple[bool, set[int], str, int | None]] = {}
    for superuser, own_limit, pk, default, model_list, group_limit, provider_id in rows:
        is_superuser, user_limit = superuser, own_limit
        if pk is None:  # a group without rules
            continue
        rule = rules.setdefault(pk, (default, set(), model_list, group_limit))
        if provider_id is not None:
            rule[1].add(provider_id)
    if not rules:
        return _without_rules(is_superuser, user_limit)
    limit = daily_limit(user_limit, [rule[3] for rule in rules.values()])
    if is_superuser:
        return Access(rules=None, token_limit=limit)
    return Access(
        rules=tuple(
            Rule(default, frozenset(ids), patterns(models))
            for default, ids, models, _limit in rules.values()
        ),
        token_limit=limit,
    )


def for_request(request: HttpRequest) -> Access:
    """``of_user`` for the request's user, read once per request."""
    cached = getattr(request, "_chat_access", None)
    if cached is None:
        user = request.user
        cached = of_user(user.pk if user.is_authenticated else None)
        request._chat_access = cached  # type: ignore[attr-defined]
    return cached


# The turn's conversation query carries these (``query_annotations``); ``of_row`` reads them.
_SUPERUSER = "access_superuser"
_USER_LIMIT = "access_user_limit"
_GROUPED = "access_grouped"


def query_annotations() -> dict[str, Any]:
    """Annotations of a query of a user's conversations: whether its user is a superuser,
    their own limit, and whether any of their groups has rules (then ``of_row`` reads them)."""
    user = OuterRef("user_id")
    users = get_user_model().objects.filter(pk=user)
    return {
        _SUPERUSER: Subquery(users.values("is_superuser")[:1]),
        _USER_LIMIT: Subquery(
            UserAllowance.objects.filter(user_id=user).values("daily_token_limit")[:1]
        ),
        _GROUPED: Exists(GroupAccess.objects.filter(group__user=user)),
    }


def of_row(row: Any, user_id: int) -> Access:
    """``of_user`` from a row read with ``query_annotations``: no query unless the user's groups
    have rules."""
    if getattr(row, _GROUPED):
        return of_user(user_id)
    return _without_rules(bool(getattr(row, _SUPERUSER)), getattr(row, _USER_LIMIT))


def check_model_allowed(access: Access, upstream: Upstream, model: str) -> None:
    """Refuse a provider and model the user may not use, saying so."""
    if access.allows(upstream.provider_id, model):
        return
    if access.rules == ():
        raise ClientError(
            gettext("Your account may not use any model yet: ask an administrator for access.")
        )
    raise ClientError(
        gettext("You may not use the model “%(model)s” of %(provider)s: pick another model.")
        % {"model": model, "provider": upstream_message(upstream.name)}
    )


def first_allowed(access: Access, upstreams: list[Upstream]) -> tuple[int | None, str] | None:
    """The first (provider id, model) of ``upstreams`` the user may use, in picker order."""
    for upstream in upstreams:
        for model in upstream.models:
            if access.allows(upstream.provider_id, model):
                return upstream.provider_id, model
    return None
