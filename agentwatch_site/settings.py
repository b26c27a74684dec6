"""AgentWatch settings: one module, configured from the environment.

With no environment set this is the embedded mode (SQLite under var/, Celery tasks run eagerly in-process,
local-memory cache). Production sets DATABASE_URL, REDIS_URL, SECRET_KEY, ALLOWED_HOSTS and DEBUG=0.
"""

import os
from pathlib import Path

from celery.schedules import crontab
from django.core.exceptions import ImproperlyConfigured

from agentwatch_site.env import (
    check_allowed_hosts,
    env_bool,
    env_database_url,
    env_float,
    env_int,
    env_ip_networks,
    env_list,
    env_log_level,
    env_redis_url,
    env_str,
)

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("AGENTWATCH_VAR_DIR", str(BASE_DIR / "var")))

DATABASE_URL = env_str("DATABASE_URL").strip()
REDIS_URL = env_redis_url("REDIS_URL")

# Embedded mode (no DATABASE_URL) is a developer's machine: DEBUG defaults on there, off in production.
DEBUG = env_bool("DEBUG", default=not DATABASE_URL)
HTTPS = env_bool("HTTPS", default=False)

SECRET_KEY = env_str("SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off.")
    SECRET_KEY = "django-insecure-development-only-key-do-not-use-in-production"  # noqa: S105

ALLOWED_HOSTS = check_allowed_hosts("ALLOWED_HOSTS", env_list(
    "ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]", "testserver"] if DEBUG or not DATABASE_URL else []
))
if not ALLOWED_HOSTS and not DEBUG:
    # Django would start and answer every request, /healthz included, with 400.
    raise ImproperlyConfigured("ALLOWED_HOSTS must be set when DEBUG is off: the comma-separated host names "
                               "AgentWatch is reached by, e.g. ALLOWED_HOSTS=agentwatch.example.com.")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_htmx",
    "csp",
    "tenants",
    "usage",
    "budgets",
]

MIDDLEWARE = [
    "agentwatch_site.middleware.RequestIdMiddleware",
    "agentwatch_site.metrics.MetricsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "agentwatch_site.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "agentwatch_site.middleware.ContentSecurityPolicyMiddleware",
    "tenants.middleware.TenantMembershipMiddleware",
]

ROOT_URLCONF = env_str("ROOT_URLCONF", "agentwatch_site.urls")  # bench/ selects bench.urls (a bare baseline view)
WSGI_APPLICATION = "agentwatch_site.wsgi.application"

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
                "tenants.context_processors.tenant",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------------
if DATABASE_URL:
    DATABASES = {
        "default": env_database_url(
            "DATABASE_URL", conn_max_age=env_int("DB_CONN_MAX_AGE", 60, minimum=0), conn_health_checks=True
        )
    }
    if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
        # Django's backend with a health check that needs no round trip while the connection is healthy.
        DATABASES["default"]["ENGINE"] = "agentwatch_site.postgresql"
        DATABASES["default"].setdefault("OPTIONS", {})
        DATABASES["default"]["OPTIONS"].setdefault("connect_timeout", env_int("DB_CONNECT_TIMEOUT", 3, minimum=1))
        # A peer that vanished without closing the connection (failover, a middlebox's idle timeout) is noticed
        # within about a minute, so the health check (agentwatch_site/postgresql/base.py) sees a readable socket.
        for option, value in {"keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10,
                              "keepalives_count": 3}.items():
            DATABASES["default"]["OPTIONS"].setdefault(option, value)
        # A process that stops in the middle of a transaction (a frozen or partitioned worker host) would hold its
        # row locks — a team's roll-ups, a session — until its connection died, and every other worker recording
        # for that team would wait, with budget checks reading the spend of before. PostgreSQL ends such a
        # transaction after this many idle seconds (none of ours waits between statements for long); 0 turns it
        # off, as a transaction-mode pooler that refuses start-up options needs.
        # PostgreSQL takes at most 2^31 - 1 milliseconds; more is refused on every connect.
        idle_seconds = env_int("DB_IDLE_IN_TRANSACTION_TIMEOUT", 60, minimum=0, maximum=2_147_483)
        if idle_seconds:
            # Added to any `options` the DATABASE_URL carries (e.g. ?options=-c%20search_path%3Dagentwatch).
            extra = DATABASES["default"]["OPTIONS"].get("options", "")
            DATABASES["default"]["OPTIONS"]["options"] = " ".join(filter(None, [
                extra, f"-c idle_in_transaction_session_timeout={idle_seconds * 1000}"]))
        # The hot-path statements (agentwatch_site/db.py) are prepared once per connection; the ORM's statements
        # are bound on the client and never prepared. Behind a transaction-mode pooler (PgBouncer < 1.21) set
        # DB_PREPARED_STATEMENTS=0.
        if env_bool("DB_PREPARED_STATEMENTS", True):
            DATABASES["default"]["OPTIONS"].setdefault("prepare_threshold", 5)
else:
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": VAR_DIR / "agentwatch.sqlite3",
            # WAL and a busy timeout let the dev server, an eager task and a management command share the
            # file without "database is locked"; IMMEDIATE takes the write lock up front instead of failing
            # on upgrade.
            "OPTIONS": {
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
                "transaction_mode": "IMMEDIATE",
                "timeout": 20,
            },
        }
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Cache, Celery --------------------------------------------------------------------------------
REDIS_SOCKET_TIMEOUT = env_float("REDIS_SOCKET_TIMEOUT", 0.5, minimum=0.01, maximum=60)
# After a Redis call times out, a process skips the optional ones for this long (agentwatch_site/redis_guard.py).
REDIS_BACKOFF_SECONDS = env_float("REDIS_BACKOFF_SECONDS", 5.0, minimum=0, maximum=300)
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "agentwatch_site.cache.AgentWatchRedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "aw",
            "OPTIONS": {
                "socket_connect_timeout": REDIS_SOCKET_TIMEOUT,
                "socket_timeout": REDIS_SOCKET_TIMEOUT,
            },
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "agentwatch"}}

CELERY_BROKER_URL = REDIS_URL or "memory://localhost/"  # with a host: kombu warns about a URL without one
CELERY_TASK_ALWAYS_EAGER = not REDIS_URL
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TIME_LIMIT = 300
# A wake-up that cannot be published is dropped (and logged): the beat sweep records the events anyway.
CELERY_TASK_PUBLISH_RETRY = False
CELERY_BROKER_CONNECTION_TIMEOUT = REDIS_SOCKET_TIMEOUT
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A worker or beat keeps reconnecting through a Redis outage of any length; Celery's default (100 attempts, about
# 45 minutes) ends the worker ("Unrecoverable error"), and `make up` (honcho) then stops the whole process set.
CELERY_BROKER_CONNECTION_MAX_RETRIES = None
# The worker and beat log through LOGGING below (JSON with DEBUG off, like the web processes), not Celery's format.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BROKER_TRANSPORT_OPTIONS = {
    # Longer than any task's hard time limit, so an unacknowledged task is only redelivered when its worker died.
    "visibility_timeout": 3600,
    "socket_connect_timeout": REDIS_SOCKET_TIMEOUT,
    "socket_timeout": 5,
}
CELERY_TIMEZONE = "UTC"
# Webhook deliveries wait on other people's servers (up to WEBHOOK_TIMEOUT_SECONDS an attempt), so they have a queue
# of their own: with a worker per queue (the Procfile), a slow or hanging receiver never holds up recording.
CELERY_TASK_ROUTES = {"tenants.tasks.webhook_deliver": {"queue": "webhooks"}}
# The slower jobs run at fixed times of the clock (UTC), not at intervals counted from beat's start: a beat whose
# schedule file is not kept (a container's disposable disk) and that restarts more often than an interval would
# otherwise never run that job — the daily purge, and retention with it.
CELERY_BEAT_SCHEDULE = {
    "sweep-unrecorded-events": {"task": "usage.tasks.sweep_unrecorded_events", "schedule": 5.0},
    "expire-sessions": {"task": "usage.tasks.expire_sessions", "schedule": crontab(minute="7")},
    "detect-spend-spikes": {"task": "usage.tasks.detect_spend_spikes", "schedule": crontab(minute="*/15")},
    "purge-expired-events": {"task": "usage.tasks.purge_expired_events", "schedule": crontab(hour="3", minute="17")},
    "retry-webhook-deliveries": {"task": "tenants.tasks.retry_due_webhook_deliveries", "schedule": 30.0},
    "sweep-budget-alerts": {"task": "budgets.tasks.budget_alerts_sweep", "schedule": 300.0},
}

# --- Product knobs ---------------------------------------------------------------------------------
INGEST_MAX_BODY_BYTES = 1024 * 1024
INGEST_MAX_BATCH = 1000
INGEST_LAG_THRESHOLD_SECONDS = env_int("INGEST_LAG_THRESHOLD_SECONDS", 60, minimum=1)
WEBHOOK_ALLOW_PRIVATE = env_bool("WEBHOOK_ALLOW_PRIVATE", default=False)
# A PEM file of the CAs that sign receivers' certificates (an on-premises receiver's internal CA); empty: the
# public CAs (certifi).
WEBHOOK_CA_BUNDLE = env_str("WEBHOOK_CA_BUNDLE", "")
if WEBHOOK_CA_BUNDLE and not Path(WEBHOOK_CA_BUNDLE).is_file():
    raise ImproperlyConfigured(f"WEBHOOK_CA_BUNDLE must name a PEM file of CA certificates, got {WEBHOOK_CA_BUNDLE!r}")
# At most 20: an attempt may wait this long for DNS and as long again for the exchange, inside the delivery task's
# 45 s soft time limit (tenants.webhooks.ATTEMPT_SOFT_TIME_LIMIT_SECONDS).
WEBHOOK_TIMEOUT_SECONDS = env_float("WEBHOOK_TIMEOUT_SECONDS", 5.0, minimum=0.1, maximum=20)
# Attempt n waits about base × 2^(n-1) seconds (± jitter) after a retryable failure; then the delivery fails.
WEBHOOK_MAX_ATTEMPTS = env_int("WEBHOOK_MAX_ATTEMPTS", 8, minimum=1)
WEBHOOK_RETRY_BASE_SECONDS = env_float("WEBHOOK_RETRY_BASE_SECONDS", 30.0, minimum=0)
# Django refuses larger bodies with 413 before any view parses them.
DATA_UPLOAD_MAX_MEMORY_SIZE = INGEST_MAX_BODY_BYTES
# Read by prometheus_client itself in every process; checked here so a missing directory is one line at start-up,
# not a traceback in each worker as it boots.
PROMETHEUS_MULTIPROC_DIR = env_str("PROMETHEUS_MULTIPROC_DIR", "")
if PROMETHEUS_MULTIPROC_DIR and not (Path(PROMETHEUS_MULTIPROC_DIR).is_dir()
                                     and os.access(PROMETHEUS_MULTIPROC_DIR, os.W_OK | os.X_OK)):
    raise ImproperlyConfigured("PROMETHEUS_MULTIPROC_DIR must name an existing directory this process can write, "
                               f"got {PROMETHEUS_MULTIPROC_DIR!r}")

# --- Auth, sessions --------------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/login/"

# --- Internationalisation --------------------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

# --- Static files ----------------------------------------------------------------------------------
STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "staticfiles"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}

# A file missing from the manifest falls back to its plain name instead of failing the page with a 500.
WHITENOISE_MANIFEST_STRICT = False

# --- Security --------------------------------------------------------------------------------------
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
# A stale token (signed in or out in another tab) gets a styled "reload" page, or an htmx banner.
CSRF_FAILURE_VIEW = "tenants.views.csrf_failure"
SILENCED_SYSTEM_CHECKS: list[str] = []
if HTTPS:
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", default=True)
    if not SECURE_SSL_REDIRECT:
        # The operator said the proxy redirects to HTTPS (README): `check --deploy` need not warn about it.
        SILENCED_SYSTEM_CHECKS.append("security.W008")
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000, minimum=0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", default=True)
    if not SECURE_HSTS_PRELOAD:
        SILENCED_SYSTEM_CHECKS.append("security.W021")  # opted out on purpose (README)
    # Behind a TLS-terminating proxy that sets X-Forwarded-Proto (documented in README).
    if env_bool("SECURE_PROXY_SSL_HEADER", default=True):
        SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^livez$", r"^readyz$", r"^metrics$"]  # middleware.PROBE_PATHS

# Reverse proxies in front of gunicorn that append the client's address to X-Forwarded-For: the sign-in throttle
# counts failures per client address, which is the proxy's own without this (agentwatch_site/http.py).
TRUSTED_PROXY_COUNT = env_int("TRUSTED_PROXY_COUNT", 0, minimum=0)

CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "font-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "frame-ancestors": ["'none'"],
        "form-action": ["'self'"],
    }
}

# --- REST framework --------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["tenants.authentication.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["tenants.permissions.HasApiScope"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["agentwatch_site.parsers.JSONParser"],
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "agentwatch_site.negotiation.ContentNegotiation",
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_SCHEMA_CLASS": "agentwatch_site.openapi.AgentWatchAutoSchema",
    "EXCEPTION_HANDLER": "agentwatch_site.errors.api_exception_handler",
    "UNAUTHENTICATED_USER": None,
    "COERCE_DECIMAL_TO_STRING": False,
    "STRICT_JSON": True,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "AgentWatch API",
    "DESCRIPTION": "Usage telemetry, budgets and spend for LLM agents.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # Several components have a `status` with different choices; name each set (else generation warns).
    "ENUM_NAME_OVERRIDES": {
        "EventStatusEnum": ["ok", "error"],
        "BudgetStatusEnum": ["ok", "alert", "exceeded"],
        "AnomalyStatusEnum": ["open", "acknowledged"],
        "AnomalyStatusFilterEnum": ["open", "acknowledged", "closed"],
        "WebhookDeliveryStatusEnum": ["pending", "succeeded", "failed"],
    },
}

# Who may read /metrics: a request from one of these addresses or networks, or one with the bearer METRICS_TOKEN.
# With a token set the default is no address: a reverse proxy on the same host makes every request loopback's.
METRICS_TOKEN = env_str("METRICS_TOKEN")
METRICS_ALLOWED_IPS = env_ip_networks("METRICS_ALLOWED_IPS", [] if METRICS_TOKEN else ["127.0.0.1", "::1"])

# --- Logging ---------------------------------------------------------------------------------------
LOG_LEVEL = env_log_level("LOG_LEVEL", "INFO")
LOG_JSON = env_bool("LOG_JSON", default=not DEBUG)
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "request_id": {"()": "agentwatch_site.logging.RequestIdFilter"},
        "warning_without_traceback": {"()": "agentwatch_site.logging.WarningWithoutTraceback"},
        "routine_tasks_at_debug": {"()": "agentwatch_site.logging.RoutineTasksAtDebug"},
    },
    "formatters": {
        "kv": {"()": "agentwatch_site.logging.KeyValueFormatter"},
        "json": {"()": "agentwatch_site.logging.JsonFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "json" if LOG_JSON else "kv",
            "filters": ["request_id"],
        }
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.request": {"level": "ERROR"},
        "django.server": {"level": "WARNING"},
        "django.security.DisallowedHost": {"filters": ["warning_without_traceback"]},
        # httpx logs every request URL at INFO; a webhook URL (Slack's) carries a secret in its path.
        "httpx": {"level": "WARNING"},
        "celery.worker.strategy": {"filters": ["routine_tasks_at_debug"]},
        "celery.app.trace": {"filters": ["routine_tasks_at_debug"]},
        "celery.beat": {"filters": ["routine_tasks_at_debug"]},
    },
}
