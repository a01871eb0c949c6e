"""Conversations and their messages; an assistant message is also the record of one generation."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext

from chat import provider_rules

env_var_name = RegexValidator(
    r"^[A-Za-z_][A-Za-z0-9_]*$",
    "Give the NAME of an environment variable (letters, digits and _), never the key itself.",
)


def answer_outcome(status: str, error_kind: str, has_text: bool) -> str:
    """How an answer ended, in one word: ``complete``, ``stopped`` (by the user),
    ``incomplete`` (the stream broke after it began), ``failed`` (no answer began),
    ``interrupted`` (the worker stopped or died); ``streaming`` until then. The kind
    ``internal`` (a bug in the relay) ends like an upstream failure: incomplete once text began."""
    if status != "error":
        return status
    if error_kind == "interrupted":
        return "interrupted"
    if error_kind == "incomplete" or has_text:
        return "incomplete"
    return "failed"


class Provider(models.Model):
    """An upstream besides the default one from the environment, added in the admin.

    The key is never stored: ``api_key_env`` names the environment variable that holds it,
    read when a request is made, so rotating a key needs no database change.
    """

    class Protocol(models.TextChoices):
        OPENAI = "openai", "OpenAI-compatible"
        DASHSCOPE = "dashscope", "DashScope native"

    name = models.CharField(max_length=100, unique=True)
    protocol = models.CharField(max_length=16, choices=Protocol.choices, default=Protocol.OPENAI)
    base_url = models.URLField(
        max_length=500,
        help_text="e.g. https://dashscope.aliyuncs.com/compatible-mode/v1, "
        "https://dashscope.aliyuncs.com/api/v1 (native), http://127.0.0.1:11434/v1 (Ollama)",
    )
    api_key_env = models.CharField(
        "API key variable",
        max_length=100,
        blank=True,
        validators=[env_var_name],
        help_text="The NAME of the environment variable holding the key (e.g. OPENAI_API_KEY). "
        "Leave empty for servers without keys.",
    )
    model_list = models.TextField(
        "models", help_text="Model names, one per line or separated by commas."
    )
    include_usage = models.BooleanField(
        default=True, help_text="Ask for token usage at the end of a stream (stream_options)."
    )
    incremental_output = models.BooleanField(
        default=True,
        help_text="DashScope native only: stream deltas (on) or the whole text so far (off).",
    )
    enabled = models.BooleanField(default=True)
    position = models.PositiveSmallIntegerField(default=0, help_text="Order in the picker.")

    class Meta:
        ordering = ["position", "name"]

    def __str__(self) -> str:
        return self.name

    @property
    def model_names(self) -> list[str]:
        names = (part.strip() for line in self.model_list.splitlines() for part in line.split(","))
        return list(dict.fromkeys(name for name in names if name))

    def clean(self) -> None:
        """The rules a provider is held to wherever it is saved (the admin, ``set_provider``):
        a key variable that is a provider key's, never a server secret; http(s) only."""
        problems: dict[str, str] = {}
        if not self.model_names:
            problems["model_list"] = "Name at least one model."
        # A malformed name is the field validator's to report, once.
        if provider_rules.VARIABLE_NAME.match(self.api_key_env or ""):
            key_problem = provider_rules.key_variable_problem(self.api_key_env)
            if key_problem:
                problems["api_key_env"] = key_problem
        url_problem = provider_rules.base_url_problem(self.base_url or "")
        if url_problem:
            problems["base_url"] = url_problem
        if problems:
            raise ValidationError(problems)


class Conversation(models.Model):
    """A thread of messages, owned by a user or, without login, by a browser session."""

    class Purpose(models.TextChoices):
        CHAT = "chat", "Chat"
        COMPARE = "compare", "Comparison pane"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="conversations",
    )
    session_key = models.CharField(max_length=40, blank=True, db_index=True)
    title = models.CharField(max_length=200, blank=True)
    # None is the default provider, configured by the environment.
    provider = models.ForeignKey(
        Provider, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    model = models.CharField(max_length=200)
    system_prompt = models.TextField(blank=True)
    stream = models.BooleanField(default=True, help_text="Ask the upstream for a streamed answer.")
    # Request options; None means "the model's default" and is not sent.
    temperature = models.FloatField(
        null=True, blank=True, validators=[MinValueValidator(0.0), MaxValueValidator(2.0)]
    )
    top_p = models.FloatField(
        null=True, blank=True, validators=[MinValueValidator(0.0), MaxValueValidator(1.0)]
    )
    max_tokens = models.PositiveIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1), MaxValueValidator(1_000_000)]
    )
    seed = models.PositiveIntegerField(null=True, blank=True)
    enable_thinking = models.BooleanField(null=True, blank=True)
    # Comparison panes are conversations too (same relay, same rows), kept out of the sidebar.
    purpose = models.CharField(max_length=16, choices=Purpose.choices, default=Purpose.CHAT)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(default=timezone.now, db_index=True)
    # Deleted, but restorable (Undo) until purged: left out of every list, page and socket.
    deleted_at = models.DateTimeField(null=True, blank=True, db_index=True)

    class Meta:
        ordering = ["-updated_at", "-id"]

    def __str__(self) -> str:
        return self.display_title

    @property
    def display_title(self) -> str:
        return self.title or gettext("New chat")


class Message(models.Model):
    """One turn. Assistant rows are created when generation starts and saved as it grows."""

    class Role(models.TextChoices):
        USER = "user", "User"
        ASSISTANT = "assistant", "Assistant"

    class Status(models.TextChoices):
        STREAMING = "streaming", "Streaming"
        COMPLETE = "complete", "Complete"
        STOPPED = "stopped", "Stopped"
        ERROR = "error", "Error"

    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="messages"
    )
    role = models.CharField(max_length=16, choices=Role.choices)
    content = models.TextField(blank=True)
    reasoning = models.TextField(blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.COMPLETE)
    model = models.CharField(max_length=200, blank=True)
    streamed = models.BooleanField(default=True)
    finish_reason = models.CharField(max_length=32, blank=True)
    error_kind = models.CharField(max_length=32, blank=True)
    error_message = models.TextField(blank=True)  # English, as logged and exported
    # The same error as data, shown in the reader's language (chat/rendering/errors.py):
    # {"template": "... (HTTP %(status)s): %(detail)s", "params": {"status": 400, ...}}, a
    # nested wording as a param alike; null for a provider's own words and for older rows.
    error_wording = models.JSONField(null=True, blank=True)
    retry_after = models.FloatField(null=True, blank=True)
    request_id = models.CharField(max_length=100, blank=True)
    ttft_ms = models.FloatField(
        null=True, blank=True, help_text="Time to the first token, thinking or answer."
    )
    thinking_ms = models.FloatField(
        null=True, blank=True, help_text="From the first thinking token to the first answer token."
    )
    answer_ms = models.FloatField(
        null=True, blank=True, help_text="Time to the first token of the answer itself."
    )
    provider_name = models.CharField(max_length=100, blank=True)
    total_ms = models.FloatField(null=True, blank=True)
    prompt_tokens = models.PositiveIntegerField(null=True, blank=True)
    completion_tokens = models.PositiveIntegerField(null=True, blank=True)
    total_tokens = models.PositiveIntegerField(null=True, blank=True)
    # The three counts above are our estimate (``usage.estimate_tokens``), not the upstream's:
    # the answer was stopped or cut off before the server reported usage.
    tokens_estimated = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now)
    completed_at = models.DateTimeField(null=True, blank=True)
    # While streaming, the worker generating it touches this every save interval: an answer
    # whose heartbeat stopped belongs to a worker that died, whichever worker notices.
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    # Versions: a regenerated answer (and an edited question) points to its first version.
    version_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.CASCADE, related_name="later_versions"
    )
    # Not shown: an answer's other versions, and the turns an edit replaced. Kept (exports,
    # rate limits), but left out of the page and of what the model is sent.
    hidden = models.BooleanField(default=False)
    # When each frame of the answer went out, and what it added: a few bytes per frame
    # (``chat.timeline``), so a shared run or conversation can be replayed at its own pace.
    timeline = models.BinaryField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [models.Index(fields=["conversation", "status"])]

    def __str__(self) -> str:
        return f"{self.role} #{self.pk} ({self.status})"

    @property
    def outcome(self) -> str:
        return answer_outcome(self.status, self.error_kind, bool(self.content or self.reasoning))


class ComparisonRun(models.Model):
    """One press of Run on the comparison page: a prompt answered with streaming on and off.

    Each side is a conversation of its own, so both go through the chat's relay unchanged.
    """

    class Mode(models.TextChoices):
        STREAM = "stream", "Streaming on"
        NOSTREAM = "nostream", "Streaming off"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    session_key = models.CharField(max_length=40, blank=True, db_index=True)
    prompt = models.TextField()
    model = models.CharField(max_length=200)
    trials = models.PositiveSmallIntegerField(default=1)
    upstream = models.CharField(max_length=200, help_text="What was measured (never the key).")
    buffered = models.BooleanField(
        default=False, help_text="The model only streams: the 'off' side was buffered."
    )
    stream_conversation = models.OneToOneField(
        Conversation, on_delete=models.CASCADE, related_name="+"
    )
    nostream_conversation = models.OneToOneField(
        Conversation, on_delete=models.CASCADE, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    # What the two panes differ in: "streaming" (on vs off, the default) or another pairing
    # (each pane's setup is its conversation's provider, model, streaming and thinking).
    pairing = models.CharField(max_length=16, default="streaming")
    # A proxy's idle read timeout both requests were made with (the timeout point), if any.
    gateway_timeout_s = models.FloatField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"Comparison #{self.pk}"

    def conversation_for(self, mode: str) -> Conversation:
        return self.stream_conversation if mode == self.Mode.STREAM else self.nostream_conversation


class ComparisonResult(models.Model):
    """One side of one trial: its answer (server timings, usage, text) and what the browser saw."""

    run = models.ForeignKey(ComparisonRun, on_delete=models.CASCADE, related_name="results")
    trial = models.PositiveSmallIntegerField()
    mode = models.CharField(max_length=16, choices=ComparisonRun.Mode.choices)
    answer = models.ForeignKey(Message, null=True, on_delete=models.SET_NULL, related_name="+")
    browser_first_text_ms = models.FloatField(null=True, blank=True)
    browser_complete_ms = models.FloatField(null=True, blank=True)

    class Meta:
        ordering = ["trial", "mode"]
        constraints = [
            models.UniqueConstraint(fields=["run", "trial", "mode"], name="one_result_per_side")
        ]

    def __str__(self) -> str:
        return f"run {self.run_id} trial {self.trial} {self.mode}"


class DailyUsage(models.Model):
    """Requests and tokens (as the upstream reported them) per user per day (UTC)."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="daily_usage"
    )
    day = models.DateField(db_index=True)
    requests = models.PositiveIntegerField(default=0)
    prompt_tokens = models.PositiveBigIntegerField(default=0)
    completion_tokens = models.PositiveBigIntegerField(default=0)
    # Of the tokens above, how many are estimates (answers stopped or cut off before their
    # upstream reported usage; see ``Message.tokens_estimated``).
    estimated_tokens = models.PositiveBigIntegerField(default=0)

    class Meta:
        ordering = ["-day", "user_id"]
        verbose_name_plural = "daily usage"
        constraints = [models.UniqueConstraint(fields=["user", "day"], name="one_usage_per_day")]

    def __str__(self) -> str:
        return f"{self.user} on {self.day}"

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class ShareLink(models.Model):
    """A read-only link to one comparison run or one conversation (``/s/<token>/``): anyone
    holding it sees that and nothing else, without an account, until it is revoked or expires.
    """

    token = models.CharField(max_length=64, unique=True)
    run = models.ForeignKey(
        ComparisonRun, null=True, blank=True, on_delete=models.CASCADE, related_name="shares"
    )
    conversation = models.ForeignKey(
        Conversation, null=True, blank=True, on_delete=models.CASCADE, related_name="shares"
    )
    # Its owner, as the run's or conversation's: the signed-in user, or the demo's session.
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    session_key = models.CharField(max_length=40, blank=True, db_index=True)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    views = models.PositiveIntegerField(default=0)
    # Whether the page names the providers (their names and hosts); off, only the models.
    show_providers = models.BooleanField(default=False)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(run__isnull=False, conversation__isnull=True)
                | models.Q(run__isnull=True, conversation__isnull=False),
                name="share_one_thing",
            )
        ]

    def __str__(self) -> str:
        what = f"run {self.run_id}" if self.run_id else f"conversation {self.conversation_id}"
        return f"Share link of {what}"


class Attachment(models.Model):
    """An image attached to a user message, validated and re-encoded (``chat.images``).

    Kept in the database rather than under MEDIA_ROOT: every worker sees it without a shared
    disk, a backup of the database is a backup of the conversation, and deleting the message
    deletes its images. Uploaded before the message is sent, so ``message`` is empty until then.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # Its owner, as a conversation's: the signed-in user, or the demo's session.
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    session_key = models.CharField(max_length=40, blank=True, db_index=True)
    message = models.ForeignKey(
        Message, null=True, blank=True, on_delete=models.CASCADE, related_name="attachments"
    )
    position = models.PositiveSmallIntegerField(default=0)
    filename = models.CharField(max_length=200)
    content_type = models.CharField(max_length=32)
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    data = models.BinaryField(editable=False)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["position", "created_at"]

    def __str__(self) -> str:
        return f"{self.content_type} {self.width}x{self.height} ({self.pk})"


class GroupAccess(models.Model):
    """Which providers and models a group's members may use, and their daily token limit
    (``chat.accounts.access`` reads them). A user may use what any of their groups allows."""

    group = models.OneToOneField("auth.Group", on_delete=models.CASCADE, related_name="access")
    default_provider = models.BooleanField(
        "the default provider",
        default=False,
        help_text="The provider configured by the environment (LLM_API_BASE). With this "
        "unticked and no provider picked below, every provider is allowed.",
    )
    providers = models.ManyToManyField(
        Provider,
        blank=True,
        related_name="+",
        help_text="Providers added in the admin that the group may use. With none picked and "
        "the default provider unticked, every provider is allowed.",
    )
    model_list = models.TextField(
        "models",
        blank=True,
        help_text="Models of those providers the group may use, one per line or separated by "
        "commas; * and ? match any text and any one character (qwen-*). Empty: all of them.",
    )
    daily_token_limit = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Tokens a member may use a day. Empty: this group sets no limit "
        "(CHAT_DAILY_TOKEN_LIMIT applies unless another group sets one); 0: no limit. A member "
        "of several groups gets the most generous of their limits.",
    )

    class Meta:
        verbose_name = "group access"
        verbose_name_plural = "group access"

    def __str__(self) -> str:
        return f"Access of {self.group}"


class UserAllowance(models.Model):
    """One user's daily token limit, over their groups' and the setting's."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="allowance"
    )
    daily_token_limit = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Tokens this user may use a day, whatever their groups say. Empty: their "
        "groups' limit, else CHAT_DAILY_TOKEN_LIMIT; 0: no limit.",
    )

    def __str__(self) -> str:
        return f"Allowance of {self.user}"


class SignOn(models.Model):
    """One single sign-on identity (the provider's issuer + ``sub``) linked to one account: found
    by ``sub``, never by email (an address can change hands or be edited at the provider; ``sub``
    is the provider's stable key)."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="sign_ons"
    )
    issuer = models.CharField(max_length=255)
    subject = models.CharField(max_length=255)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["issuer", "subject"], name="sign_on_identity")
        ]

    def __str__(self) -> str:
        return f"{self.issuer} {self.subject}"
