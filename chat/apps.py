from __future__ import annotations

from django.apps import AppConfig


class ChatConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "chat"
    verbose_name = "Chat"

    def ready(self) -> None:
        from chat.accounts import oidc, signals  # noqa: F401  (oidc: its system checks)

        # Sign-out, password changes, deactivation and deleted sessions close sockets.
        signals.connect()
