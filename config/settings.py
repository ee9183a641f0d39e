"""Settings, all configuration by environment (see README), read by one typed reader (`config.env`).

DATABASE_URL and REDIS_URL are required here; `config.embedded` supplies them (real embedded servers)
when a developer runs the stack or the tests without them. A bad or missing value stops the process
with one line naming the variable (`check(env)` below), not a traceback.
"""

import logging
import os
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import dj_database_url
from marshmallow.validate import OneOf, Range, Regexp

from config.env import check, fail, reader

BASE_DIR = Path(__file__).resolve().parent.parent
env = reader()
_POSITIVE = Range(min=1)
_NON_NEGATIVE = Range(min=0)
_SECONDS = Range(min=0, min_inclusive=False)
# DRF's rate syntax (`300/min`): anything else would only fail when a request builds its throttle.
_RATE = Regexp(r"^[1-9][0-9]{0,8}/(s|sec|second|m|min|minute|h|hour|d|day)$", error="expected a rate like 300/min")

DEBUG = env.bool("DJANGO_DEBUG", False)
# `dev.py run|test|manage` sets COURSECHAIN_DEV=1: local defaults for the secrets below. Without it
# (production) a missing secret stops the process instead of accepting forged payments.
DEV_DEFAULTS = env.bool("COURSECHAIN_DEV", False)


def _secret(name: str, dev_default: str) -> str:
    value = env.str(name, "")
    if value:
        return value
    if DEV_DEFAULTS:
        return dev_default
    fail(f"{name} must be set (or COURSECHAIN_DEV=1 for local development)")


SECRET_KEY = _secret("DJANGO_SECRET_KEY", "coursechain-dev-only-" + str(BASE_DIR))

INSTALLED_APPS = [
    "backoffice.apps.BackofficeAdminConfig",  # django.contrib.admin, on the back office's site (backoffice/site.py)
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI and ReDoc served from this pinned package: /api/docs/ works offline
    "channels",
    "axes",
    "outbox",
    "purchases",
    "allocation",
    "sessions_app",
    "realtime",
    "backoffice",
    "student_page",
]

MIDDLEWARE = [
    "config.middleware.serve_probes",  # before the Host check: probes come by address (config/middleware.py)
    "django.middleware.security.SecurityMiddleware",
    # Static files (the admin's CSS/JS) for both the web and ws processes; anything not a known
    # static file, such as a traversal attempt, falls through to a 404.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "config.middleware.reject_nul_characters",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "config.urls"
ASGI_APPLICATION = "config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASE_URL = env.str("DATABASE_URL", "")
REDIS_URL = env.str("REDIS_URL", "")
if not DATABASE_URL or not REDIS_URL:
    fail(
        "DATABASE_URL and REDIS_URL must be set; `python3 dev.py run|test` starts embedded servers "
        "and sets them for you."
    )

# conn_health_checks: with the pool, a connection killed by the server (restart,
# pg_terminate_backend) is noticed at checkout and replaced instead of failing the next request.
DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_health_checks=True)}
# A bounded connection pool per process: a burst of requests waits for a connection instead of
# exhausting PostgreSQL's max_connections (and answering 5xx). Each web/relay/worker process holds
# at most DB_POOL_MAX_SIZE connections.
DATABASES["default"]["CONN_MAX_AGE"] = 0
DATABASES["default"].setdefault("OPTIONS", {}).update(
    {
        "pool": {
            "min_size": env.int("DB_POOL_MIN_SIZE", 1, validate=_NON_NEGATIVE),
            "max_size": env.int("DB_POOL_MAX_SIZE", 10, validate=_POSITIVE),
            "timeout": env.float("DB_POOL_TIMEOUT_SECONDS", 20.0, validate=_SECONDS),
        },
        # Lets operators (and the chaos tests) tell the web, relay and worker connections apart.
        "application_name": env.str("DB_APPLICATION_NAME", "coursechain"),
        # An unreachable server (a dropped packet, not a refusal) is reported after this, with its
        # cause, instead of hanging on the kernel's TCP timeout.
        "connect_timeout": env.int("DB_CONNECT_TIMEOUT_SECONDS", 5, validate=_POSITIVE),
    }
)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"


def _redis_socket_path(url: str) -> str | None:
    parts = urlsplit(url)
    return parts.path if parts.scheme == "unix" else None


# One Redis serves three roles, separated by key prefixes: read-model cache, channel layer, broker.
_socket = _redis_socket_path(REDIS_URL)
CELERY_BROKER_URL = f"redis+socket://{_socket}" if _socket else REDIS_URL
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A worker outlives any Redis outage: it keeps reconnecting instead of exiting after 100 tries.
CELERY_BROKER_CONNECTION_MAX_RETRIES = None
# Without socket timeouts a Redis that stalls (rather than refusing) would hang the relay's enqueue.
CELERY_BROKER_CONNECTION_TIMEOUT = 3
CELERY_BROKER_TRANSPORT_OPTIONS = {"socket_timeout": 5, "socket_connect_timeout": 3}
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", False)
# Celery's Django fixup closes the whole connection pool before and after every task in a prefork
# worker, so each task paid for a new PostgreSQL backend (at 50 purchases/s, about a sixth of the
# machine's CPU). With this it does so only every 2N tasks; between tasks outbox/celery_app.py hands
# the connection back to the pool instead.
CELERY_DB_REUSE_MAX = env.int("CELERY_DB_REUSE_MAX", 1000, validate=_POSITIVE)
# The worker's connections only (outbox/celery_app.py sets them when a worker starts): its statements
# are few and run over and over (the runner's, the handlers' services', emit), so parameters are bound
# server-side and each statement is prepared on its pooled connection after this many runs, and the
# backend skips parsing and planning it again: about a third less backend CPU per handler delivery. 0
# turns preparing off, for a transaction-mode pooler without prepared-statement support. Safe for what
# the worker runs: every parameter is typed by its value or its context (the whole suite passes with it).
WORKER_DB_PREPARE_THRESHOLD = env.int("WORKER_DB_PREPARE_THRESHOLD", 5, validate=_NON_NEGATIVE)

# The channel layer carries the relay's pushes to the WebSocket consumers (realtime/README.md, "Slow
# and dead clients"). It is a best-effort pipe: the outbox is the record, and a consumer repairs any
# gap from the database (every event has a seq), so these bounds may drop messages but never lose an
# event. channels-redis keeps one Redis key for all sockets of a server process, and a buffer per
# socket inside that process.
CHANNEL_LAYERS = {
    "default": {
        # channels-redis with pools that wait for a free connection instead of failing (realtime/layers.py).
        "BACKEND": "realtime.layers.BlockingRedisChannelLayer",
        "CONFIG": {
            # socket_timeout: every consumer idles in a 5 s blocking read (BZPOPMIN, channels-redis'
            # brpop_timeout); redis-py 8's default 5 s socket timeout cuts it and kills each idle
            # socket with 1011 (django/channels_redis#422). Longer than the read, still finite, so a
            # dead Redis connection is noticed. max_connections / timeout: see the sockets block below.
            "hosts": [
                {
                    "address": REDIS_URL,
                    "socket_timeout": 10,
                    "max_connections": env.int("CHANNEL_LAYER_POOL_SIZE", 100, validate=_POSITIVE),
                    "timeout": env.float("CHANNEL_LAYER_POOL_TIMEOUT_SECONDS", 30.0, validate=_SECONDS),
                }
            ],
            "prefix": "cc:chan",
            # Messages waiting per channel key. group_send skips a full key (it never blocks or raises,
            # so a slow consumer cannot stall the relay), and a socket's in-process buffer drops its
            # oldest beyond this. The Redis key is shared by every socket of a server process, so it must
            # absorb a burst of relay batches (OUTBOX_BATCH_SIZE=500 students per batch, a few relays);
            # a socket that stops reading is dropped after REALTIME_SEND_TIMEOUT_SECONDS, so its buffer
            # rarely fills. A dropped push is repaired from the database on the next push or ping.
            "capacity": env.int("CHANNEL_LAYER_CAPACITY", 1000, validate=_POSITIVE),
            # Seconds a message may wait in Redis. A healthy server drains in milliseconds; a message
            # this old belongs to a server process that died or hangs, whose clients reconnect and
            # replay with ?after=. Short, so a dead process's key stops holding memory soon.
            "expiry": env.int("CHANNEL_LAYER_EXPIRY_SECONDS", 30, validate=_POSITIVE),
            # Group members are forgotten after this; live consumers re-join every quarter of it, so
            # only channels of crashed server processes (which never left) age out, within the hour.
            "group_expiry": env.int("CHANNEL_LAYER_GROUP_EXPIRY_SECONDS", 3600, validate=_POSITIVE),
        },
    }
}
# A WebSocket send blocked this long (the client's TCP window and our buffers are full) drops the
# client, which reconnects with ?after=<last seq>. Generous for slow mobile links: the server buffers
# ~64 KiB plus the kernel's socket buffer before a send blocks at all.
REALTIME_SEND_TIMEOUT_SECONDS = env.float("REALTIME_SEND_TIMEOUT_SECONDS", 10.0, validate=_SECONDS)
# -- Sockets: the live registry of open sockets, the per-student cap, the channel layer's pool -----
# (realtime/registry.py, realtime/README.md "Sockets end when they should").
# Open sockets per student across every `ws` process; one more is closed with 4429.
REALTIME_MAX_SOCKETS_PER_STUDENT = env.int("REALTIME_MAX_SOCKETS_PER_STUDENT", 20, validate=_POSITIVE)
# A `ws` process refreshes its sockets' registry entries every quarter of this; a killed process's
# entries (and the slots they hold) expire after it.
REALTIME_REGISTRY_TTL_SECONDS = env.float("REALTIME_REGISTRY_TTL_SECONDS", 10.0, validate=_SECONDS)
REALTIME_REGISTRY_PREFIX = "cc:ws"
# CHANNEL_LAYER_POOL_SIZE (100) bounds each `ws`/relay process's channel-layer connections; a caller
# past it waits up to CHANNEL_LAYER_POOL_TIMEOUT_SECONDS (30) for one instead of failing (300 sockets
# closing at once all need one for group_discard). Read in CHANNEL_LAYERS above.
# Where browsers open the event stream, e.g. `ws://127.0.0.1:8001` when the `ws` process listens on its
# own port (`dev.py run`); empty means the page's own origin (a router sends /ws/ to the `ws` process).
REALTIME_WS_URL = env.str("REALTIME_WS_URL", "").rstrip("/")
# The student page pings its socket this often and calls it dead (badge "reconnecting…", reconnect)
# when no pong comes back within the timeout: a half-open connection is otherwise noticed only after
# TCP gives up, many seconds later.
STUDENT_PAGE_PING_SECONDS = env.float("STUDENT_PAGE_PING_SECONDS", 20.0, validate=_SECONDS)
STUDENT_PAGE_PONG_TIMEOUT_SECONDS = env.float("STUDENT_PAGE_PONG_TIMEOUT_SECONDS", 10.0, validate=_SECONDS)

# Read models (the dashboard) live in Redis; the TTL is a safety net, the relay invalidates.
READ_CACHE_URL = REDIS_URL
READ_CACHE_PREFIX = env.str("READ_CACHE_PREFIX", "cc:rm")
READ_CACHE_TTL_SECONDS = env.int("READ_CACHE_TTL_SECONDS", 3600, validate=_POSITIVE)

# Webhook: comma-separated secrets so two can be active during a rotation.
PAYMENT_WEBHOOK_SECRETS = [
    s.strip() for s in _secret("PAYMENT_WEBHOOK_SECRET", "whsec_dev_only").split(",") if s.strip()
]
PAYMENT_WEBHOOK_TOLERANCE_SECONDS = 300

# Outbox relay tuning.
OUTBOX_BATCH_SIZE = env.int("OUTBOX_BATCH_SIZE", 500, validate=_POSITIVE)
# The relay prepares its claim and settle on its connection and runs them with generic plans that its
# session remakes every few seconds (outbox/relay_statements.py). Off: plain statements, for a
# transaction-mode pooler (pgbouncer), where a prepared statement or a session setting does not stay
# with the relay's connection.
RELAY_DB_PREPARE = env.bool("RELAY_DB_PREPARE", True)
OUTBOX_LEASE_SECONDS = env.float("OUTBOX_LEASE_SECONDS", 30.0, validate=_SECONDS)
OUTBOX_HANDLER_LEASE_SECONDS = env.float("OUTBOX_HANDLER_LEASE_SECONDS", 60.0, validate=_SECONDS)
OUTBOX_POLL_SECONDS = env.float("OUTBOX_POLL_SECONDS", 1.0, validate=_SECONDS)
OUTBOX_MAX_ATTEMPTS = env.int("OUTBOX_MAX_ATTEMPTS", 10, validate=_POSITIVE)
OUTBOX_BACKOFF_BASE_SECONDS = env.float("OUTBOX_BACKOFF_BASE_SECONDS", 1.0, validate=_SECONDS)
OUTBOX_BACKOFF_MAX_SECONDS = env.float("OUTBOX_BACKOFF_MAX_SECONDS", 300.0, validate=_SECONDS)

# Scheduling (sessions_app): sessions start no earlier than the lead time from now, a purchase's first
# session no later than the horizon, on a grid of this many minutes from each availability window's start.
SCHEDULING_LEAD_HOURS = env.float("SCHEDULING_LEAD_HOURS", 24.0, validate=Range(min=0))
SCHEDULING_HORIZON_WEEKS = env.int("SCHEDULING_HORIZON_WEEKS", 26, validate=_POSITIVE)
SCHEDULING_STEP_MINUTES = env.int("SCHEDULING_STEP_MINUTES", 30, validate=Range(min=1, max=1440))

# /metrics: set METRICS_TOKEN to require `Authorization: Bearer <token>`. Relays and workers write
# their counters to PROMETHEUS_MULTIPROC_DIR (shared by the processes of one host; clear it on deploy).
METRICS_TOKEN = env.str("METRICS_TOKEN", "")
# prometheus-client reads it from the environment itself, so the default is written there too.
PROMETHEUS_MULTIPROC_DIR = os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(BASE_DIR / ".data" / "prometheus"))
Path(PROMETHEUS_MULTIPROC_DIR).mkdir(parents=True, exist_ok=True)

REST_FRAMEWORK: dict[str, Any] = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["rest_framework.authentication.TokenAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "api.errors.api_exception_handler",
    "UNAUTHENTICATED_USER": None,
    # Rate limits (see the security block below); the payment webhook opts out.
    "DEFAULT_THROTTLE_CLASSES": ["config.throttling.StudentRateThrottle", "config.throttling.AnonymousRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {
        "student": env.str("API_THROTTLE_STUDENT_RATE", "300/min", validate=_RATE),
        "anonymous": env.str("API_THROTTLE_ANON_RATE", "60/min", validate=_RATE),
    },
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Course purchases API",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
    "COMPONENT_SPLIT_REQUEST": True,
    "DESCRIPTION": "Course purchases: the payment webhook, the student's dashboard and event feed.\n\n"
    'Every error has one shape, `{"error": {"code": "snake_case", "message": "human text", "details": {}}}`, '
    "with a 4xx status; never a 5xx for bad input.\n\n"
    "Live updates: the [WebSocket event stream](/api/docs/websocket/) (URL, close codes, replay and resume).",
    "EXTERNAL_DOCS": {"description": "WebSocket event stream", "url": "/api/docs/websocket/"},
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / ".data" / "static"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
# WhiteNoise serves the apps' static files from their own directories (no collectstatic step needed),
# and whatever `collectstatic` put in STATIC_ROOT.
WHITENOISE_USE_FINDERS = True

_LOG_FORMATS = OneOf(["plain", "json"])
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {"()": "config.logging.JsonFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": env.str("LOG_FORMAT", "plain", validate=_LOG_FORMATS),
            "filters": ["redact_tokens", "client_errors_without_traceback"],
        },
    },
    # No `?token=` value reaches a log line through this handler (gunicorn's and uvicorn's own log
    # lines are redacted by config.gunicorn_logging and realtime.redact).
    "filters": {
        "redact_tokens": {"()": "realtime.redact.RedactTokenFilter"},
        "client_errors_without_traceback": {"()": "config.logging.ClientErrorsWithoutTraceback"},
    },
    "root": {"handlers": ["console"], "level": env.log_level("LOG_LEVEL", logging.INFO)},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        # Celery's two INFO lines per task ("received", "succeeded"): formatted and written for every
        # handler batch, twice per purchase, and they say nothing the outbox does not (`outbox status`,
        # `trace`). Failures still log, at ERROR (Celery's) and in outbox.runner (the handler's).
        "celery.worker.strategy": {"level": "WARNING"},
        "celery.app.trace": {"level": "WARNING"},
    },
}


# -- Security ---------------------------------------------------------------------------------------
# Everything the README's "Security" section promises, in one place. Production is any process
# without COURSECHAIN_DEV=1 (dev.py and the tests set it). The HTTPS settings default to off, so a
# plain-HTTP local stack works; the README's production environment turns each on, and
# `manage.py check --deploy` is clean under it.

# Host names this deployment answers to. Production refuses to start without them, or with `*`
# (which would let any Host header into absolute URLs and password-reset links).
ALLOWED_HOSTS = [h.strip() for h in env.list("ALLOWED_HOSTS", ["*"] if DEV_DEFAULTS else [], subcast=str) if h.strip()]
if not DEV_DEFAULTS and (not ALLOWED_HOSTS or "*" in ALLOWED_HOSTS):
    fail("ALLOWED_HOSTS must list this deployment's host names (not *) in production")
CSRF_TRUSTED_ORIGINS = [o.strip() for o in env.list("CSRF_TRUSTED_ORIGINS", [], subcast=str) if o.strip()]

# HTTPS. SECURE_PROXY_SSL_HEADER names the header a TLS-terminating proxy sets to `https` (e.g.
# X-Forwarded-Proto); only set it behind a proxy that always sets or strips that header.
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", False)
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^livez$", r"^readyz$", r"^metrics$"]  # probes and scrapers inside the network
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", 0, validate=Range(min=0))
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", False)
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", False)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", False)
_proxy_header = env.str("SECURE_PROXY_SSL_HEADER", "")
if _proxy_header:
    SECURE_PROXY_SSL_HEADER = ("HTTP_" + _proxy_header.upper().replace("-", "_"), "https")
# How many proxies in front append to X-Forwarded-For: the client's address, for the admin lockout
# and the anonymous rate limit, is the one the outermost trusted proxy saw (0: the peer's address).
TRUSTED_PROXY_COUNT = env.int("TRUSTED_PROXY_COUNT", 0, validate=Range(min=0))
REST_FRAMEWORK["NUM_PROXIES"] = TRUSTED_PROXY_COUNT or None

# Admin logins: django-axes locks out a username, and separately an address, after
# ADMIN_LOGIN_FAILURE_LIMIT failed attempts, for ADMIN_LOGIN_COOLOFF_MINUTES (answered 429).
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
AXES_FAILURE_LIMIT = env.int("ADMIN_LOGIN_FAILURE_LIMIT", 5, validate=_POSITIVE)
AXES_COOLOFF_TIME = timedelta(minutes=env.float("ADMIN_LOGIN_COOLOFF_MINUTES", 15.0, validate=_SECONDS) or 15.0)
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_RESET_ON_SUCCESS = True
AXES_CLIENT_IP_CALLABLE = "config.throttling.client_ip"
AXES_VERBOSE = False  # no log line per attempt: the access log has them, and a lockout is logged

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 10}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# The API's rate limits (REST_FRAMEWORK above: API_THROTTLE_STUDENT_RATE per student token,
# API_THROTTLE_ANON_RATE per address without one) count in Redis, shared by every web process. If
# Redis is down the limits are not applied (config.throttling): availability over throttling.
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    "throttle": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "cc:throttle",
        "OPTIONS": {"socket_timeout": 1, "socket_connect_timeout": 1},
    },
}

# Last: every variable above has been read; refuse the bad ones, all in one line.
check(env)
_pool = DATABASES["default"]["OPTIONS"]["pool"]
if _pool["min_size"] > _pool["max_size"]:
    fail(f"DB_POOL_MIN_SIZE={_pool['min_size']} is above DB_POOL_MAX_SIZE={_pool['max_size']}")

# A handler delivery is redelivered once its lease runs out (OUTBOX_HANDLER_LEASE_SECONDS), so a task
# must be stopped before then, or a slow handler would run twice side by side. The soft limit raises
# SoftTimeLimitExceeded inside the handler (its transaction rolls back, the delivery is retried with
# backoff); the hard limit kills the worker child a little later, still inside the lease.
CELERY_TASK_SOFT_TIME_LIMIT = max(1, int(OUTBOX_HANDLER_LEASE_SECONDS * 0.75))
CELERY_TASK_TIME_LIMIT = max(CELERY_TASK_SOFT_TIME_LIMIT + 1, int(OUTBOX_HANDLER_LEASE_SECONDS * 0.9))
