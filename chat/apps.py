from __future__ import annotations

from django.apps import AppConfig


class ChatConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "chat"
    verbose_name = "Chat"

    def ready(self) -> None:
        from django.contrib.auth.signals import user_logged_out

        from chat.accounts.signals import close_sockets_on_logout

        user_logged_out.connect(close_sockets_on_logout, dispatch_uid="chat-close-sockets")
