"""Streamside settings: one module, every value from the environment (see README "Settings").

Defaults are the embedded demo: SQLite, the in-memory channel layer and the built-in upstream
simulator. A team deployment sets DATABASE_URL, REDIS_URL and an API key instead.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path
from urllib.parse import urlsplit

import dj_database_url
from csp.constants import NONE, SELF
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool = False) -> bool:
    """Read a boolean the way people write them in shell: 1/true/yes/on."""
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_float(name: str, default: float) -> float:
    value = os.environ.get(name, "").strip()
    return float(value) if value else default


def env_list(name: str, default: list[str]) -> list[str]:
    value = os.environ.get(name, "")
    items = [item.strip() for item in value.split(",") if item.strip()]
    return items or default


DEBUG = env_bool("DEBUG")

DEVELOPMENT_SECRET_KEY = "insecure-development-key-do-not-use-in-production"
SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not DEBUG and (
    len(SECRET_KEY) < 50
    or len(set(SECRET_KEY)) < 5
    or SECRET_KEY.startswith("django-insecure-")
    or SECRET_KEY == DEVELOPMENT_SECRET_KEY
):
    # Sessions and CSRF tokens are signed with it: a guessable key means forged logins.
    sys.exit(
        "SECRET_KEY must be set to a long random value when DEBUG is off, e.g. "
        "python3 -c 'import secrets; print(secrets.token_urlsafe(50))' (see README, Settings)."
    )
SECRET_KEY = SECRET_KEY or DEVELOPMENT_SECRET_KEY

ALLOWED_HOSTS = env_list(
    "ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"] if DEBUG else ["localhost", "127.0.0.1"]
)
if not DEBUG and "*" in ALLOWED_HOSTS:
    # Any Host header accepted: password-reset links, absolute URLs and the websocket origin
    # check would all trust whatever a client claims.
    sys.exit("ALLOWED_HOSTS=* is refused when DEBUG is off: name the hosts (see README, Settings).")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "django_htmx",
    "template_partials",
    "csp",
    "axes",
    "chat",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # Outside SessionMiddleware: a request's password change or deleted session closes or
    # renews sockets once the session is saved (chat/accounts/signals.py).
    "chat.accounts.middleware.account_events",
    "django.contrib.sessions.middleware.SessionMiddleware",
    # The language: the django_language cookie (set by the page's switcher), else the
    # browser's Accept-Language. No URL prefixes: the URLs are a documented contract.
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "chat.accounts.middleware.LoginRequiredWhenConfigured",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "csp.middleware.CSPMiddleware",
    # Last, as django-axes asks: it turns a sign-in its backend refused as locked into the
    # throttle's page (429), inside the language and security middleware above.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "chatsite.urls"
ASGI_APPLICATION = "chatsite.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "csp.context_processors.nonce",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.config(
        env="DATABASE_URL",
        default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}",
        # Channels runs every database call of a worker on one thread, so one persistent
        # connection serves them all (a new PostgreSQL connection per call costs more than the
        # call); the health check replaces one that PostgreSQL dropped (a restart) before use.
        conn_max_age=600,
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL and a busy timeout: the generation service saves while pages read.
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
    }
elif DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # A database host that drops packets must not hold the worker's one database thread for
    # the operating system's TCP timeout (minutes): the final save retries on its own clock.
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault("connect_timeout", 5)

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = os.environ.get("REDIS_URL", "")
# Redis pub/sub channels are server-wide (the database number in REDIS_URL does not separate
# them), so two deployments sharing a Redis server would hear each other's "conversation-1".
# Names are prefixed per deployment: by default a digest of its database's identity.
_db = DATABASES["default"]
CHANNEL_LAYER_PREFIX = os.environ.get("CHANNEL_LAYER_PREFIX", "").strip() or (
    "streamside-"
    + hashlib.sha256(
        f"{_db['ENGINE']}|{_db.get('HOST', '')}|{_db.get('PORT', '')}|{_db['NAME']}".encode()
    ).hexdigest()[:10]
)
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            # Pub/sub, not the list-based RedisChannelLayer: measured with bench.workers, the
            # latter fell behind at 60 streams (one BZPOPMIN round trip per frame, queues over
            # capacity, 5 s latency) where pub/sub relays 200. Both are at-most-once; frames
            # are numbered and a socket joining mid-answer is sent a snapshot.
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {
                # redis-py 8 times reads out after 5 s by default, which breaks blocking
                # layer reads (django/channels_redis#422): leave room.
                "hosts": [{"address": REDIS_URL, "socket_timeout": 30}],
                "prefix": CHANNEL_LAYER_PREFIX,
            },
        }
    }
else:
    # Correct for one process only; several workers need REDIS_URL.
    CHANNEL_LAYERS = {
        "default": {"BACKEND": "chat.ops.layers.LocalChannelLayer", "CONFIG": {"capacity": 1000}}
    }

# --- Accounts -----------------------------------------------------------------------------------
# Every page and websocket needs a logged-in user; the default whenever DEBUG is off. Without
# it (the demo) conversations belong to the browser session.
CHAT_REQUIRE_LOGIN = env_bool("CHAT_REQUIRE_LOGIN", not DEBUG)
# Anyone who reaches the site may create an account; otherwise the admin creates users.
CHAT_ALLOW_SIGNUP = env_bool("CHAT_ALLOW_SIGNUP", False)
# Tokens (prompt + completion, as upstreams report them) a user may use per day; 0: no limit.
CHAT_DAILY_TOKEN_LIMIT = int(os.environ.get("CHAT_DAILY_TOKEN_LIMIT", "0") or 0)
# Models a signed-in user in no group with access rules may use (chat/accounts/access.py):
# "allow" every model, or "deny" them all. Superusers and the demo may always use every model.
CHAT_ACCESS_DEFAULT = os.environ.get("CHAT_ACCESS_DEFAULT", "allow").strip().lower() or "allow"
if CHAT_ACCESS_DEFAULT not in ("allow", "deny"):
    raise ImproperlyConfigured("CHAT_ACCESS_DEFAULT must be allow or deny.")
# Answers one user (or demo session) may request per minute; 0 for no limit.
CHAT_RATE_LIMIT = int(os.environ.get("CHAT_RATE_LIMIT", "30") or 0)
# Answers one user (or demo session) may have streaming at once, across all workers; 0: no cap.
CHAT_MAX_CONCURRENT = int(os.environ.get("CHAT_MAX_CONCURRENT", "4") or 0)
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "chat:index"
LOGOUT_REDIRECT_URL = "login"

# The sign-in throttle (django-axes, counting in the database: every worker agrees), for
# /accounts/login/ and /admin/login/ alike; chat/accounts/throttle.py says how it counts.
# Failed sign-ins of one account from one address before that pair is locked; 0: no throttle.
CHAT_LOGIN_FAILURE_LIMIT = int(os.environ.get("CHAT_LOGIN_FAILURE_LIMIT", "10") or 0)
# Failed sign-ins from one address, whatever the accounts, before it is locked; 0: no such limit.
CHAT_LOGIN_ADDRESS_FAILURE_LIMIT = int(
    os.environ.get("CHAT_LOGIN_ADDRESS_FAILURE_LIMIT", "50") or 0
)
# How long a failure counts after the last one, and so how long a lock lasts.
CHAT_LOGIN_LOCKOUT_MINUTES = env_float("CHAT_LOGIN_LOCKOUT_MINUTES", 15.0)
if CHAT_LOGIN_LOCKOUT_MINUTES <= 0:
    raise ImproperlyConfigured(
        "CHAT_LOGIN_LOCKOUT_MINUTES must be more than 0 (CHAT_LOGIN_FAILURE_LIMIT=0 turns the "
        "throttle off)."
    )
# Axes' backend only refuses locked sign-ins; Django's own checks the password.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_ENABLED = CHAT_LOGIN_FAILURE_LIMIT > 0
AXES_HANDLER = "chat.accounts.throttle.LoginThrottle"
# Account and address together, then the address alone (each with its own limit).
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"], "ip_address"]
AXES_FAILURE_LIMIT = "chat.accounts.throttle.failure_limit"
AXES_COOLOFF_TIME = "chat.accounts.throttle.lockout_period"
# REMOTE_ADDR only: Daphne's --proxy-headers fills it from the X-Forwarded-For nginx sets.
AXES_CLIENT_IP_CALLABLE = "chat.accounts.throttle.client_address"
AXES_LOCKOUT_CALLABLE = "chat.accounts.throttle.lockout_response"
# A sign-in refused while locked is not counted: the lock ends when the page says it will.
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
# A success does not wipe the address's failures: one account of their own would let a
# guesser reset the count for all the others.
AXES_RESET_ON_SUCCESS = False
# No row per successful sign-in kept for ever (with its address): only failures are kept,
# and cleared at the next sign-in once they no longer count.
AXES_DISABLE_ACCESS_LOG = True

# --- Single sign-on (OpenID Connect; chat/accounts/oidc.py) -----------------------------------
# Off unless OIDC_ISSUER is set: then the login page offers "Sign in with <name>" beside the
# password form (or instead of it, OIDC_ONLY). Endpoints are discovered from
# <issuer>/.well-known/openid-configuration at the first sign-in; OIDC_OP_*_ENDPOINT name them.
OIDC_ISSUER = os.environ.get("OIDC_ISSUER", "").strip().rstrip("/")
OIDC_RP_CLIENT_ID = os.environ.get("OIDC_CLIENT_ID", "").strip()
# A secret: only ever sent to the provider's token endpoint (its name has SECRET: never logged).
OIDC_RP_CLIENT_SECRET = os.environ.get("OIDC_CLIENT_SECRET", "").strip()
OIDC_PROVIDER_NAME = os.environ.get("OIDC_PROVIDER_NAME", "").strip()
# Email domains allowed to sign in (empty: any); a group claim one of whose groups is needed.
OIDC_ALLOWED_DOMAINS = [d.lower().lstrip("@") for d in env_list("OIDC_ALLOWED_DOMAINS", [])]
OIDC_GROUPS_CLAIM = os.environ.get("OIDC_GROUPS_CLAIM", "").strip() or "groups"
OIDC_ALLOWED_GROUPS = env_list("OIDC_ALLOWED_GROUPS", [])
OIDC_ONLY_REQUESTED = env_bool("OIDC_ONLY", False)
OIDC_ONLY = OIDC_ONLY_REQUESTED and bool(OIDC_ISSUER)
OIDC_RP_SCOPES = os.environ.get("OIDC_SCOPES", "").strip() or "openid email profile"
OIDC_TIMEOUT = env_float("OIDC_TIMEOUT", 10.0)
OIDC_VERIFY_SSL = True
OIDC_OP_AUTHORIZATION_ENDPOINT = os.environ.get("OIDC_OP_AUTHORIZATION_ENDPOINT", "").strip()
OIDC_OP_TOKEN_ENDPOINT = os.environ.get("OIDC_OP_TOKEN_ENDPOINT", "").strip()
OIDC_OP_USER_ENDPOINT = os.environ.get("OIDC_OP_USER_ENDPOINT", "").strip()
OIDC_OP_JWKS_ENDPOINT = os.environ.get("OIDC_OP_JWKS_ENDPOINT", "").strip()
OIDC_RP_SIGN_ALGO = "RS256"
OIDC_USE_PKCE = True
OIDC_USE_NONCE = True
# Signing out also signs out at the provider (its end_session_endpoint, if it has one); the ID
# token is kept in the (server-side) session for that.
OIDC_LOGOUT_AT_PROVIDER = env_bool("OIDC_LOGOUT_AT_PROVIDER", False) and bool(OIDC_ISSUER)
OIDC_STORE_ID_TOKEN = OIDC_LOGOUT_AT_PROVIDER
if OIDC_ISSUER:
    # Last: the throttle's backend still sees every sign-in first (it needs the request, which
    # the library passes); its callback is not counted (AXES_WHITELIST_CALLABLE).
    AUTHENTICATION_BACKENDS.append("chat.accounts.oidc.SignOnBackend")
AXES_WHITELIST_CALLABLE = "chat.accounts.oidc.outside_throttle"

# --- Email (password reset links) -----------------------------------------------------------
# "console" prints each email, reset link included, to the worker's output (the journal):
# development only. A team sets django.core.mail.backends.smtp.EmailBackend and the EMAIL_HOST*.
EMAIL_BACKEND = (
    os.environ.get("EMAIL_BACKEND", "").strip() or "django.core.mail.backends.console.EmailBackend"
)
EMAIL_HOST = os.environ.get("EMAIL_HOST", "").strip() or "localhost"
EMAIL_PORT = int(os.environ.get("EMAIL_PORT", "25") or 25)
EMAIL_HOST_USER = os.environ.get("EMAIL_HOST_USER", "")
# A secret: its name holds PASSWORD, so the log filter (chat/ops/logsafety.py) blanks it out.
EMAIL_HOST_PASSWORD = os.environ.get("EMAIL_HOST_PASSWORD", "")
# STARTTLS on the submission port (587); EMAIL_USE_SSL for implicit TLS (465). Not both.
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
EMAIL_USE_SSL = env_bool("EMAIL_USE_SSL", False)
if EMAIL_USE_TLS and EMAIL_USE_SSL:
    raise ImproperlyConfigured("EMAIL_USE_TLS and EMAIL_USE_SSL are exclusive: set one.")
# Django waits for ever on a silent mail server by default, holding the request's thread.
EMAIL_TIMEOUT = env_float("EMAIL_TIMEOUT", 10.0)
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "").strip() or "webmaster@localhost"
# How long a reset link works (seconds): an hour, not Django's three days; it works once anyway.
PASSWORD_RESET_TIMEOUT = int(os.environ.get("PASSWORD_RESET_TIMEOUT", "3600") or 3600)
if PASSWORD_RESET_TIMEOUT <= 0:
    raise ImproperlyConfigured("PASSWORD_RESET_TIMEOUT must be more than 0 seconds.")

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en"
# Every language here has a catalogue under locale/ (README "Languages").
LANGUAGES = [("en", "English"), ("zh-hans", "简体中文")]
LOCALE_PATHS = [BASE_DIR / "locale"]
# The switcher's choice is remembered for a year, signed in or not.
LANGUAGE_COOKIE_AGE = 365 * 24 * 3600
LANGUAGE_COOKIE_HTTPONLY = True
LANGUAGE_COOKIE_SAMESITE = "Lax"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(os.environ.get("STATIC_ROOT") or BASE_DIR / "staticfiles")
# htmx and its websocket extension come from npm (package.json), served as our own static files.
STATICFILES_DIRS = [
    BASE_DIR / "static",
    ("vendor/htmx", BASE_DIR / "node_modules" / "htmx.org" / "dist"),
    ("vendor/htmx-ext-ws", BASE_DIR / "node_modules" / "htmx-ext-ws" / "dist"),
]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}
WHITENOISE_USE_FINDERS = DEBUG

# Served over HTTPS (a TLS proxy in front, which sets X-Forwarded-Proto): the default whenever
# DEBUG is off. Plain-HTTP redirects to HTTPS, cookies are secure-only, HSTS is sent.
CHAT_HTTPS = env_bool("CHAT_HTTPS", not DEBUG)
if CHAT_HTTPS:
    SECURE_SSL_REDIRECT = True
    # A balancer's health check may come over plain HTTP from inside the network.
    SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    LANGUAGE_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = int(os.environ.get("SECURE_HSTS_SECONDS", "31536000"))
    # These two commit the organisation's whole domain, which this app cannot know: they are
    # the deployer's choice (README), so their reminders are not warnings about this app.
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
    SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
    SILENCED_SYSTEM_CHECKS = ["security.W005", "security.W021"]

SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"

# A strict policy: no inline script or style, no eval; htmx is configured to match (base.html).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        "img-src": [SELF, "data:"],
        "connect-src": [SELF],
        "font-src": [SELF],
        "object-src": [NONE],
        "base-uri": [SELF],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    }
}
if OIDC_LOGOUT_AT_PROVIDER:
    # The sign-out form's answer redirects to the provider, and form-action governs that too.
    _issuer = urlsplit(OIDC_ISSUER)
    CONTENT_SECURITY_POLICY["DIRECTIVES"]["form-action"].append(
        f"{_issuer.scheme}://{_issuer.netloc}"
    )

_HTTP_LOG_LEVEL = os.environ.get("LOG_HTTP_LEVEL", "WARNING")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {"()": "chat.ops.logformat.JsonFormatter"},
    },
    # Secrets from the environment are blanked out of every record, whoever logs them.
    "filters": {"secrets": {"()": "chat.ops.logsafety.RedactSecrets"}},
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            # LOG_FORMAT=json: one JSON object per line, with each answer's fields as keys.
            "formatter": "json" if os.environ.get("LOG_FORMAT", "plain") == "json" else "plain",
            "filters": ["secrets"],
        }
    },
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {
        # The HTTP clients log every request line at INFO; quiet unless asked (LOG_HTTP_LEVEL).
        "httpx": {"level": _HTTP_LOG_LEVEL},
        "httpcore": {"level": _HTTP_LOG_LEVEL},
        "aiohttp": {"level": _HTTP_LOG_LEVEL},
        # django-axes writes a banner at every start and a line per failed sign-in at INFO;
        # its lockouts (WARNING) are what an operator needs to see.
        "axes": {"level": "WARNING"},
    },
}

# --- Upstream model server -------------------------------------------------------------------
# The default provider. More can be added in the admin (chat.Provider); see chat/providers.py.
DASHSCOPE_COMPATIBLE_BASE = "https://dashscope.aliyuncs.com/compatible-mode/v1"
DASHSCOPE_NATIVE_BASE = "https://dashscope.aliyuncs.com/api/v1"
PORT = int(os.environ.get("PORT", "8000"))

LLM_API_KEY = os.environ.get("LLM_API_KEY", "") or os.environ.get("DASHSCOPE_API_KEY", "")
# Variables a provider added in the admin may name as its key, besides names ending in
# _API_KEY; SECRET_KEY, DATABASE_URL and REDIS_URL are refused even here (chat/provider_rules.py).
CHAT_PROVIDER_KEY_VARIABLES = env_list("CHAT_PROVIDER_KEY_VARIABLES", [])
# "openai" (chat completions, also DashScope's compatible mode) or "dashscope" (native SSE).
LLM_API_PROTOCOL = os.environ.get("LLM_API_PROTOCOL", "openai").strip().lower() or "openai"
if LLM_API_PROTOCOL not in {"openai", "dashscope"}:
    raise ImproperlyConfigured(
        f"LLM_API_PROTOCOL must be 'openai' or 'dashscope', not {LLM_API_PROTOCOL!r}."
    )
_llm_base = os.environ.get("LLM_API_BASE", "").strip().rstrip("/")
# No key and no base: the built-in simulator, served by this same process under /simulator/.
LLM_SIMULATOR = not LLM_API_KEY and not _llm_base
if LLM_SIMULATOR:
    _sim_path = "api/v1" if LLM_API_PROTOCOL == "dashscope" else "v1"
    _llm_base = f"http://127.0.0.1:{PORT}/simulator/{_sim_path}"
elif not _llm_base:
    _llm_base = (
        DASHSCOPE_NATIVE_BASE if LLM_API_PROTOCOL == "dashscope" else DASHSCOPE_COMPATIBLE_BASE
    )
LLM_API_BASE = _llm_base
# The default provider's name in the model picker (empty: derived from the base URL).
LLM_PROVIDER_NAME = os.environ.get("LLM_PROVIDER_NAME", "").strip()
LLM_MODELS = env_list("LLM_MODELS", ["qwen-plus", "qwen-turbo", "qwen-max", "qwq-plus"])
# DashScope native only: ask for deltas (true) or the whole text so far on every event (false).
LLM_INCREMENTAL_OUTPUT = env_bool("LLM_INCREMENTAL_OUTPUT", True)
LLM_INCLUDE_USAGE = env_bool("LLM_INCLUDE_USAGE", True)
# Models that accept only streaming calls: "stream off" is buffered on the server for them.
LLM_STREAM_ONLY_MODELS = env_list("LLM_STREAM_ONLY_MODELS", ["qwq*", "qwen3-*", "*-thinking*"])
LLM_CONNECT_TIMEOUT = env_float("LLM_CONNECT_TIMEOUT", 10.0)
# Idle time allowed between two bytes of an answer (not a total deadline).
LLM_READ_TIMEOUT = env_float("LLM_READ_TIMEOUT", 300.0)
LLM_MAX_CONNECTIONS = int(os.environ.get("LLM_MAX_CONNECTIONS", "1000"))
# One answer's overall deadline, retries included; keep-alive comments do not extend it. 0: none.
LLM_TOTAL_TIMEOUT = env_float("LLM_TOTAL_TIMEOUT", 600.0)
# Times a 429, a 5xx or a refused connection is asked again, only before the first token.
LLM_RETRIES = int(os.environ.get("LLM_RETRIES", "2") or 0)
# A Retry-After longer than this is not waited for: the user is told when to retry at once.
LLM_RETRY_MAX_WAIT = env_float("LLM_RETRY_MAX_WAIT", 20.0)

# --- Relay ------------------------------------------------------------------------------------
# The longest a token may wait to share a frame with the next ones, when the worker is behind
# (its event loop lags). A worker keeping up sends every token at once; the first never waits.
STREAM_FRAME_INTERVAL = env_float("STREAM_FRAME_INTERVAL_MS", 30.0) / 1000
# How often a streaming answer's text is saved while it grows (never per token).
STREAM_SAVE_INTERVAL = env_float("STREAM_SAVE_INTERVAL_MS", 1000.0) / 1000
# A socket whose browser stops reading: past this many bytes queued but unsent its deltas are
# dropped (it gets one snapshot once it drains); behind for this long, it is closed (1013) and
# the page reconnects. One slow reader cannot grow a worker's memory without bound.
STREAM_SOCKET_BUFFER = int(env_float("STREAM_SOCKET_BUFFER_KB", 256.0) * 1024)
STREAM_BEHIND_LIMIT = env_float("STREAM_BEHIND_LIMIT_MS", 20000.0) / 1000
# permessage-deflate on the websockets (Daphne does not offer it by itself): a delta frame is
# mostly repeated markup, so it travels several times smaller, for a few µs of CPU per frame.
WEBSOCKET_COMPRESSION = env_bool("WEBSOCKET_COMPRESSION", True)
# How long a finished answer's save is retried while the database is unreachable (a restart):
# the answer stays in the worker's memory meanwhile, and its sockets get the final frame after.
STREAM_FINAL_SAVE_TIMEOUT = env_float("STREAM_FINAL_SAVE_TIMEOUT_MS", 300000.0) / 1000
# On SIGTERM a worker lets its answers in flight finish for this long, then stops and saves them.
STREAM_SHUTDOWN_GRACE = env_float("STREAM_SHUTDOWN_GRACE_MS", 10000.0) / 1000
# An answer still "streaming" whose worker has not touched it for this long died with that
# worker; it is shown as interrupted, with its saved text and Retry.
STREAM_ORPHAN_AFTER = max(
    env_float("STREAM_ORPHAN_AFTER_MS", 10000.0) / 1000, 3 * STREAM_SAVE_INTERVAL
)
# How often a signed-in socket re-reads its session (still there, the user still active, the
# password unchanged), catching what no signal announced (a raw DELETE, expiry). 0: never.
STREAM_SESSION_CHECK = env_float("STREAM_SESSION_CHECK_MS", 60000.0) / 1000
if STREAM_SESSION_CHECK < 0:
    raise ImproperlyConfigured("STREAM_SESSION_CHECK_MS must be 0 (never) or more.")
CHAT_MAX_MESSAGE_CHARS = int(os.environ.get("CHAT_MAX_MESSAGE_CHARS", "32000"))
# Images attached to a message (chat/images.py): bytes per file, pixels per image (larger is
# refused as a decompression bomb) and images per message.
CHAT_IMAGE_MAX_BYTES = int(os.environ.get("CHAT_IMAGE_MAX_BYTES", str(10 * 1024 * 1024)))
CHAT_IMAGE_MAX_PIXELS = int(os.environ.get("CHAT_IMAGE_MAX_PIXELS", "25000000"))
CHAT_IMAGE_MAX_COUNT = int(os.environ.get("CHAT_IMAGE_MAX_COUNT", "4"))
