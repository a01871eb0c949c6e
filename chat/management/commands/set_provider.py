"""``manage.py set_provider NAME --base-url URL --models a,b``: add or update a provider.

For scripts (``make local-model`` registers the local llama.cpp server with it) and for
deployments configured as code; the admin does the same by hand. The key is never an
argument: ``--api-key-env`` names the environment variable that holds it.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from chat.models import Provider


class Command(BaseCommand):
    help = "Add or update an upstream provider (matched by name)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument("--base-url", required=True)
        parser.add_argument("--models", required=True, help="Comma-separated model names.")
        parser.add_argument(
            "--protocol", choices=[c.value for c in Provider.Protocol], default="openai"
        )
        parser.add_argument(
            "--api-key-env",
            default="",
            help="NAME of the key's variable: ending in _API_KEY or listed in "
            "CHAT_PROVIDER_KEY_VARIABLES (never SECRET_KEY, DATABASE_URL, REDIS_URL).",
        )
        parser.add_argument("--no-usage", action="store_true", help="Do not send stream_options.")
        parser.add_argument(
            "--cumulative",
            action="store_true",
            help="DashScope native: ask for the whole text so far (incremental_output false).",
        )
        parser.add_argument("--disable", action="store_true", help="Keep it, hidden.")

    def handle(self, *args: Any, **options: Any) -> None:
        provider = Provider.objects.filter(name=options["name"]).first() or Provider(
            name=options["name"]
        )
        created = provider.pk is None
        provider.base_url = options["base_url"].rstrip("/")
        provider.protocol = options["protocol"]
        provider.model_list = "\n".join(
            m.strip() for m in options["models"].split(",") if m.strip()
        )
        provider.api_key_env = options["api_key_env"]
        provider.include_usage = not options["no_usage"]
        provider.incremental_output = not options["cumulative"]
        provider.enabled = not options["disable"]
        try:
            provider.full_clean()
        except ValidationError as exc:
            problems = "; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items())
            raise CommandError(problems) from None
        provider.save()
        verb = "Added" if created else "Updated"
        self.stdout.write(
            f"{verb} provider “{provider.name}” (#{provider.pk}): {provider.protocol} at "
            f"{provider.base_url}, models {', '.join(provider.model_names)}"
        )
