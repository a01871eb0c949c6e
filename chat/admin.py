from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.models import Group, User
from django.db.models import Field
from django.http import HttpRequest

from chat import provider_rules
from chat.models import (
    Conversation,
    DailyUsage,
    GroupAccess,
    Message,
    Provider,
    SignOn,
    UserAllowance,
)


@admin.register(Provider)
class ProviderAdmin(admin.ModelAdmin):
    """Upstreams besides the default one; the key stays in the environment, named here."""

    list_display = ("name", "protocol", "base_url", "api_key_env", "key_present", "enabled")
    list_editable = ("enabled",)
    list_filter = ("protocol", "enabled")
    fields = (
        "name", "protocol", "base_url", "api_key_env", "model_list", "include_usage",
        "incremental_output", "enabled", "position",
    )  # fmt: skip

    def formfield_for_dbfield(
        self, db_field: Field[Any, Any], request: HttpRequest, **kwargs: Any
    ) -> Any:
        if db_field.name == "base_url":
            kwargs["assume_scheme"] = "https"  # a bare host means https, as Django 6 will
            kwargs["help_text"] = (
                f"{db_field.help_text}. http or https only; this server sends the key there."
            )
        if db_field.name == "api_key_env":
            # The rule (chat/provider_rules.py), told before it refuses a save.
            kwargs["help_text"] = (
                "The NAME of the environment variable holding the key: one ending in _API_KEY "
                "(e.g. OPENAI_API_KEY) or listed in CHAT_PROVIDER_KEY_VARIABLES; never "
                "SECRET_KEY, DATABASE_URL or REDIS_URL. Leave empty for servers without keys."
            )
        return super().formfield_for_dbfield(db_field, request, **kwargs)

    @admin.display(boolean=True, description="key set")
    def key_present(self, provider: Provider) -> bool | None:
        """Whether the named variable is set and may be sent (never its value): a variable the
        rules refuse shows as not set, as it is never sent."""
        if not provider.api_key_env:
            return None
        value, _refused = provider_rules.read_key(provider.api_key_env)
        return value is not None


class MessageInline(admin.TabularInline):
    model = Message
    extra = 0
    fields = ("role", "status", "content", "completion_tokens", "ttft_ms", "total_ms")
    readonly_fields = fields


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    list_display = ("display_title", "user", "provider", "model", "stream", "updated_at")
    search_fields = ("title",)
    inlines = [MessageInline]


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ("id", "conversation", "role", "status", "model", "created_at")
    list_filter = ("role", "status")


@admin.register(DailyUsage)
class DailyUsageAdmin(admin.ModelAdmin):
    """Read-only: the relay counts; nobody edits history."""

    list_display = (
        "day", "user", "requests", "prompt_tokens", "completion_tokens", "total_tokens",
        "estimated_tokens",
    )  # fmt: skip
    list_filter = ("day",)
    search_fields = ("user__username",)
    date_hierarchy = "day"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class GroupAccessInline(admin.StackedInline):
    """A group's access rules, on the group's page (``chat.accounts.access`` applies them)."""

    model = GroupAccess
    can_delete = True
    verbose_name_plural = "chat access"
    fields = ("default_provider", "providers", "model_list", "daily_token_limit")
    filter_horizontal = ("providers",)


class UserAllowanceInline(admin.StackedInline):
    """A user's own daily token limit, on the user's page."""

    model = UserAllowance
    can_delete = True
    verbose_name_plural = "chat allowance"


admin.site.unregister(Group)
admin.site.unregister(User)


@admin.register(Group)
class ChatGroupAdmin(GroupAdmin):
    inlines = [*GroupAdmin.inlines, GroupAccessInline]


@admin.register(User)
class ChatUserAdmin(UserAdmin):
    inlines = [*UserAdmin.inlines, UserAllowanceInline]


# Single sign-on links: which provider identity is which account. Deleting one makes that
# identity's next sign-in link (or make) an account afresh.
@admin.register(SignOn)
class SignOnAdmin(admin.ModelAdmin):
    list_display = ("user", "issuer", "subject", "created")
    list_filter = ("issuer",)
    search_fields = ("user__username", "user__email", "subject")
    readonly_fields = ("user", "issuer", "subject", "created")

    def has_add_permission(self, request: HttpRequest) -> bool:
        """Links are made by signing in, never by hand."""
        return False
