"""Settings for the Cloud Integration System: one file, every value from the environment.

`DJANGO_ENV` picks the mode:

- ``development`` (the default): embedded SQLite in WAL mode, django-q2's ORM broker and a
  local-memory cache, so a fresh machine needs nothing else.
- ``production``: nothing secret has a default, and every security setting is on.

`DATABASE_URL` switches to PostgreSQL; `REDIS_URL` switches the django-q2 broker and the cache to
Redis. `.env.example` lists every variable with a one-line comment.
"""

from datetime import timedelta
from pathlib import Path

import environ
from corsheaders.defaults import default_headers
from csp.constants import NONCE as CSP_NONCE

# The order domain imports nothing of Django: its event names are safe to read here.
from orders.domain import CORRECTED_EVENT_TYPE, NOTIFIED_EVENT_TYPES

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DJANGO_ENV = env.str("DJANGO_ENV", default="development")
if DJANGO_ENV not in {"development", "production"}:
    raise environ.ImproperlyConfigured(f"DJANGO_ENV must be development or production, not {DJANGO_ENV!r}")
PRODUCTION = DJANGO_ENV == "production"

# --- Core -----------------------------------------------------------------------------------
if PRODUCTION:
    # No default: a production process without its own key must not start.
    SECRET_KEY = env.str("DJANGO_SECRET_KEY")
    ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS")
else:
    SECRET_KEY = env.str(
        "DJANGO_SECRET_KEY",
        default="development-only-key-never-used-in-production-0123456789abcdef",
    )
    ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "testserver"])

DEBUG = env.bool("DJANGO_DEBUG", default=DJANGO_ENV == "development")
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "orders.apps.CisAdminConfig",  # django.contrib.admin, with the one order admin
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework_simplejwt",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_q",
    "corsheaders",
    "csp",
    "oauth2_provider",
    "rest_framework_api_key",
    "rest_framework_simplejwt.token_blacklist",
    "access",
    "orders",
    "payments",
    "integrations",
    "monitoring",
    "live",
]
if not PRODUCTION:
    # The stand-ins (Stripe, SendGrid, Sheets, AWS) and their commands: development and tests
    # only; the image leaves the folder out (.dockerignore).
    INSTALLED_APPS.append("sandbox")

MIDDLEWARE = [
    # First: the request id and the timing cover everything after it.
    "monitoring.middleware.RequestMonitoringMiddleware",
    # Before anything that may answer: preflight requests and CORS headers on every answer.
    "corsheaders.middleware.CorsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "config.middleware.CSPMiddleware",
    # Before the CSRF check reads a form: oversized or unreadable bodies answer in JSON (413/400).
    "config.middleware.RequestBodyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

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
                "orders.context_processors.cart",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------
SQLITE_PATH = env.path("SQLITE_PATH", default=BASE_DIR / "db.sqlite3")
DATABASES = {
    "default": env.db_url("DATABASE_URL", default=f"sqlite:///{SQLITE_PATH}"),
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the web server read while a worker writes; IMMEDIATE transactions take the write
    # lock up front, so two writers queue (up to `timeout` seconds) instead of failing with
    # "database is locked" halfway through.
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
    }
    # Tests use a file too, not shared-cache memory, so that concurrent connections queue on the
    # busy timeout exactly as the web server and workers do.
    DATABASES["default"]["TEST"] = {
        "NAME": str(Path(DATABASES["default"]["NAME"]).with_name("test_db.sqlite3"))
    }
else:
    DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("DATABASE_CONN_MAX_AGE", default=60))
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Cache and task broker ------------------------------------------------------------------
REDIS_URL = env.str("REDIS_URL", default="")
if REDIS_URL:
    CACHES = {
        "default": {
            # Django's, reusing one Redis client per connection pool (core/cache.py).
            "BACKEND": "core.cache.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": env.str("CACHE_KEY_PREFIX", default="cis"),
        }
    }
    CACHES["shared"] = CACHES["default"]
else:
    CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        # State every web and worker process must see alike (circuit breakers, rate limits):
        # in the database when there is no Redis (`createcachetable` makes its table).
        "shared": {
            "BACKEND": "django.core.cache.backends.db.DatabaseCache",
            "LOCATION": "cis_shared_cache",
            # Past MAX_ENTRIES the table drops a third of its rows by key order, circuits and
            # lockouts included; rate limits keep a row per client, so leave ample room.
            "OPTIONS": {"MAX_ENTRIES": 100_000},
        },
    }

# django-q2: `timeout` (a task's time limit) stays below `retry` (when an unacknowledged task is
# handed out again), or a slow task would run twice at once. Retries of side effects are decided
# by the delivery ledger, not by the broker, so the broker's own attempts are bounded.
Q_CLUSTER = {
    "name": env.str("Q_CLUSTER_NAME", default="cis"),
    "workers": env.int("Q_WORKERS", default=4),
    "timeout": env.int("Q_TIMEOUT", default=60),
    "retry": env.int("Q_RETRY", default=90),
    "max_attempts": env.int("Q_MAX_ATTEMPTS", default=5),
    "ack_failures": True,
    "save_limit": env.int("Q_SAVE_LIMIT", default=250),
    "catch_up": False,
    "poll": 0.5,
}
if REDIS_URL:
    Q_CLUSTER["redis"] = REDIS_URL
else:
    Q_CLUSTER["orm"] = "default"
if Q_CLUSTER["timeout"] >= Q_CLUSTER["retry"]:
    raise environ.ImproperlyConfigured("Q_TIMEOUT must be lower than Q_RETRY")

# --- Auth -----------------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    # Ten, not Django's eight: "ada12345" (a name and a run of digits) was accepted.
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 10}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "orders:product_list"
LOGOUT_REDIRECT_URL = "orders:product_list"

# --- I18n and static files ------------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = env.path("STATIC_ROOT", default=BASE_DIR / "staticfiles")
MEDIA_URL = "/media/"
MEDIA_ROOT = env.path("MEDIA_ROOT", default=BASE_DIR / "media")
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "whitenoise.storage.CompressedManifestStaticFilesStorage"
            if PRODUCTION
            else "django.contrib.staticfiles.storage.StaticFilesStorage"
        )
    },
}
# Outside production WhiteNoise serves straight from the app and project folders, so `make run`
# needs no collectstatic.
WHITENOISE_USE_FINDERS = not PRODUCTION
WHITENOISE_AUTOREFRESH = not PRODUCTION

# --- API ------------------------------------------------------------------------------------
REST_FRAMEWORK = {
    # OAuth 2.0 tokens before JWTs: both come as `Bearer`, and the OAuth class leaves JWT-shaped
    # values alone. API keys and OAuth tokens carry scopes (access.permissions.HasScopes).
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "access.authentication.OAuth2TokenAuthentication",
        "access.jwt.RevocableJWTAuthentication",
        "access.authentication.ApiKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    # One parsing path for every JSON body: size, UTF-8, depth (config/parsers.py).
    "DEFAULT_PARSER_CLASSES": ["config.parsers.JsonParser"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "core.exceptions.api_exception_handler",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
    # Rate limits on the shared cache (access.throttling): every client's general budget, then
    # the budget of the route it calls (RATE_LIMIT_ROUTES). Rates are the RATE_LIMIT_* below.
    "DEFAULT_THROTTLE_CLASSES": [
        "access.throttling.ClientRateThrottle",
        "access.throttling.RouteRateThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {},  # filled in after SIMPLE_JWT, from RATE_LIMIT_*
}
if DEBUG:
    REST_FRAMEWORK["DEFAULT_RENDERER_CLASSES"].append("rest_framework.renderers.BrowsableAPIRenderer")

SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(minutes=env.int("JWT_ACCESS_MINUTES", default=5)),
    "REFRESH_TOKEN_LIFETIME": timedelta(days=env.int("JWT_REFRESH_DAYS", default=7)),
    # Each refresh returns a new refresh token and blacklists the old one.
    "ROTATE_REFRESH_TOKENS": True,
    "BLACKLIST_AFTER_ROTATION": True,
    "UPDATE_LAST_LOGIN": True,
    "SIGNING_KEY": env.str("JWT_SIGNING_KEY", default=SECRET_KEY),
    "AUTH_HEADER_TYPES": ("Bearer",),
}

# --- Rate limits and login lockout (access.throttling, access.lockout) ----------------------
# Budgets as "<requests>/<second|minute|hour|day>" (DRF's notation; "off" for none). Counters
# live in the shared cache, so every web process on every host draws on the same budget. A
# window opens at a client's first request and lasts the period; over budget answers 429 with
# Retry-After. Clients are counted by user (an API key or OAuth token counts as its user),
# anonymous ones by source address.
RATE_LIMIT_USER = env.str("RATE_LIMIT_USER", default="600/min")
RATE_LIMIT_ANON = env.str("RATE_LIMIT_ANON", default="120/min")
# POST /api/auth/token and the login forms, per source address (wrong passwords are also
# counted per username by the lockout below).
RATE_LIMIT_LOGIN = env.str("RATE_LIMIT_LOGIN", default="10/min")
RATE_LIMIT_TOKEN_REFRESH = env.str("RATE_LIMIT_TOKEN_REFRESH", default="60/min")
# Orders placed without an account (POST /api/orders, the checkout form), per source address.
RATE_LIMIT_ORDER_CREATE_ANON = env.str("RATE_LIMIT_ORDER_CREATE_ANON", default="20/hour")
# POST /api/payments/confirm and the pay page's confirm call, per client.
RATE_LIMIT_PAYMENT_CONFIRM = env.str("RATE_LIMIT_PAYMENT_CONFIRM", default="30/min")
# Stripe's webhook, per source address (Stripe sends from a handful of addresses).
RATE_LIMIT_WEBHOOK = env.str("RATE_LIMIT_WEBHOOK", default="600/min")
REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"] = {
    "user": RATE_LIMIT_USER,
    "anon": RATE_LIMIT_ANON,
    "login": RATE_LIMIT_LOGIN,
    "token_refresh": RATE_LIMIT_TOKEN_REFRESH,
    "order_create_anon": RATE_LIMIT_ORDER_CREATE_ANON,
    "payment_confirm": RATE_LIMIT_PAYMENT_CONFIRM,
    "webhook": RATE_LIMIT_WEBHOOK,
}
# Which API route (URL name) and method draws on which budget, besides the client's general
# one. A budget whose name ends in "_anon" counts only clients without a user.
RATE_LIMIT_ROUTES = {
    "token_obtain_pair": {"POST": "login"},
    "token_refresh": {"POST": "token_refresh"},
    "api-orders": {"POST": "order_create_anon"},
    "api-payment-confirm": {"POST": "payment_confirm"},
}
# How many proxies in front of the app append to X-Forwarded-For (0: none, the client is
# REMOTE_ADDR). With N, the client is the N-th address from the right; never trust more than
# there are, or clients can pick their own address.
RATE_LIMIT_TRUSTED_PROXY_COUNT = env.int("RATE_LIMIT_TRUSTED_PROXY_COUNT", default=0)
# After this many failed logins for one username, or from one address, within the window, every
# login for it (even with the right password) is refused for LOGIN_LOCKOUT_SECONDS. A success
# clears the username's count.
LOGIN_LOCKOUT_FAILURES = env.int("LOGIN_LOCKOUT_FAILURES", default=5)
LOGIN_LOCKOUT_ADDRESS_FAILURES = env.int("LOGIN_LOCKOUT_ADDRESS_FAILURES", default=20)
LOGIN_LOCKOUT_WINDOW_SECONDS = env.int("LOGIN_LOCKOUT_WINDOW_SECONDS", default=900)
LOGIN_LOCKOUT_SECONDS = env.int("LOGIN_LOCKOUT_SECONDS", default=900)

# --- Access: API keys, OAuth 2.0, CORS, CSP ----------------------------------------------------
# The scopes an API key or an OAuth token may carry (JWTs and sessions act as their user).
API_SCOPES = {
    "orders:read": "Read orders",
    "orders:write": "Place, change and cancel orders",
    "payments:write": "Pay orders",
    "payments:refund": "Refund payments (staff)",
    "monitoring:read": "Read health, metrics, errors and alerts (staff)",
    "integrations:write": "Retry deliveries (staff)",
}
OAUTH2_PROVIDER = {
    "SCOPES": API_SCOPES,
    "DEFAULT_SCOPES": ["orders:read"],
    "PKCE_REQUIRED": True,
    "ACCESS_TOKEN_EXPIRE_SECONDS": env.int("OAUTH_ACCESS_TOKEN_SECONDS", default=3600),
    "REFRESH_TOKEN_EXPIRE_SECONDS": env.int("OAUTH_REFRESH_TOKEN_SECONDS", default=14 * 24 * 3600),
    "ROTATE_REFRESH_TOKEN": True,
    "ALLOWED_REDIRECT_URI_SCHEMES": ["https"] if PRODUCTION else ["http", "https"],
    # A replayed (already rotated) refresh token revokes its whole family.
    "REFRESH_TOKEN_REUSE_PROTECTION": True,
    # Client-credentials tokens act as their application's user (access.oauth).
    "OAUTH2_VALIDATOR_CLASS": "access.oauth.ScopedOAuth2Validator",
    # RFC 9700 (OAuth 2.0 Security BCP): no implicit or password grant, PKCE with S256 only, no
    # token in a query string, `iss` in the authorization response, tokens hashed at rest.
    "COMPLIANT_BCP_RFC9700_IMPLICIT_GRANT": True,
    "COMPLIANT_BCP_RFC9700_PASSWORD_GRANT": True,
    "COMPLIANT_BCP_RFC9700_PKCE_METHOD": True,
    "COMPLIANT_BCP_RFC9700_ACCESS_TOKEN_TRANSPORT": True,
    "COMPLIANT_BCP_RFC9700_AUTHZ_RESPONSE_ISS": True,
    "COMPLIANT_BCP_RFC9700_TOKEN_STORAGE": True,
}
# Origins (scheme://host[:port]) whose browser clients may call /api/ and /o/; none by default.
CORS_ALLOWED_ORIGINS = env.list("CORS_ALLOWED_ORIGINS", default=[])
CORS_URLS_REGEX = r"^/(api|o)/.*$"
CORS_ALLOW_HEADERS = (*default_headers, "idempotency-key")
CORS_EXPOSE_HEADERS = ["Retry-After", "X-Request-ID"]
CORS_PREFLIGHT_MAX_AGE = 3600

SPECTACULAR_SETTINGS = {
    "TITLE": "Cloud Integration System API",
    "DESCRIPTION": "Orders, payments and monitoring. Money is in integer minor units.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI's files come from drf-spectacular-sidecar and are served from our own static
    # files: no CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # The security schemes (oauth2, bearer, apiKey) come from access.schema's extensions; this
    # hook adds each operation's scope for API keys (`x-required-scopes`).
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "access.schema.document_scopes",
        # Every operation's 400/401/403/404/413/415/429 answers, in the error shape.
        "config.schema.document_error_answers",
    ],
    "ENUM_NAME_OVERRIDES": {
        "OrderStatusEnum": "orders.serializers.ORDER_STATUS_CHOICES",
        "HealthStatusEnum": "monitoring.apis.HEALTH_STATUSES",
    },
}

# --- The order platform ---------------------------------------------------------------------
# Which OrderRepository adapter stores orders: "orm" (the default), "dynamodb", or a dotted path
# loaded like a cache backend.
ORDER_REPOSITORY = {
    "orm": "orders.repositories.orm.DjangoOrderRepository",
    "dynamodb": "orders.repositories.dynamodb.DynamoDbOrderRepository",
}.get(
    _repository := env.str("ORDER_REPOSITORY", default="orm"),
    _repository,
)
# The DynamoDB table of the "dynamodb" repository (on AWS_ENDPOINT_URL: moto outside production).
DYNAMODB_TABLE = env.str("DYNAMODB_TABLE", default="cis-orders")
# DynamoDB's own endpoint, when it differs from AWS_ENDPOINT_URL (empty: the same).
DYNAMODB_ENDPOINT_URL = env.str("DYNAMODB_ENDPOINT_URL", default="")
# Flat shipping charge in minor units added to every order (0 = free shipping).
ORDER_SHIPPING_FLAT_MINOR = env.int("ORDER_SHIPPING_FLAT_MINOR", default=0)
ORDER_MAX_LINES = env.int("ORDER_MAX_LINES", default=50)
ORDER_MAX_QUANTITY_PER_LINE = env.int("ORDER_MAX_QUANTITY_PER_LINE", default=100)
# Stock no one pays for is stock no one can buy. An order still unpaid (pending_payment or
# payment_failed) this long after it was placed is cancelled and its stock released by the
# `orders-expire-unpaid` schedule, every minute (0: unpaid orders never expire).
ORDER_PAYMENT_TIMEOUT_MINUTES = env.int("ORDER_PAYMENT_TIMEOUT_MINUTES", default=60)
# How many orders the expiry sweep reads per page (it goes through every page each run).
ORDER_EXPIRY_BATCH = env.int("ORDER_EXPIRY_BATCH", default=100)
# Checks that keep an unpaid order from expiring for now: dotted paths of `check(order_id) ->
# bool` (True: leave it). Payments sits above orders, so it registers its own: an order whose
# payment is under way is not cancelled under it.
ORDER_EXPIRY_HOLDS = ["payments.selectors.order_has_open_payment"]
# The most units an anonymous client (counted per source address) may hold in unpaid orders at
# once; the next order that would go over is refused until one is paid, cancelled or expired.
# 0: no limit.
ORDER_ANON_HOLD_MAX_UNITS = env.int("ORDER_ANON_HOLD_MAX_UNITS", default=20)
# At most this many emails an hour to one guest address (orders without an account); more are
# skipped and recorded as skipped in the delivery ledger. Customers with accounts are not
# limited. 0: no limit.
GUEST_EMAIL_MAX_PER_HOUR = env.int("GUEST_EMAIL_MAX_PER_HOUR", default=5)

# --- Payments (Stripe) ---------------------------------------------------------------------
# Which PaymentGateway adapter charges cards: a dotted path, like ORDER_REPOSITORY.
PAYMENT_GATEWAY = env.str("PAYMENT_GATEWAY", default="payments.gateways.stripe.StripeGateway")
# Outside production these default to the local stand-in (localstripe, started by `make run`).
STRIPE_API_BASE = env.str(
    "STRIPE_API_BASE", default="https://api.stripe.com" if PRODUCTION else "http://127.0.0.1:8420"
)
STRIPE_JS_URL = env.str(
    "STRIPE_JS_URL",
    default="https://js.stripe.com/v3/" if PRODUCTION else f"{STRIPE_API_BASE}/js.stripe.com/v3/",
)


# Content-Security-Policy on every page (django-csp): our own files and nothing inline (the API
# docs' one init script carries the request's nonce). The payment page adds Stripe.js's origin
# from STRIPE_JS_URL and what it frames and calls (config.middleware.CSPMiddleware, read per
# request). CSP_REPORT_ONLY=true sends it as Content-Security-Policy-Report-Only.
_CSP = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'", CSP_NONCE],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'"],
        "connect-src": ["'self'"],
        "frame-ancestors": ["'none'"],
        "form-action": ["'self'"],
        "base-uri": ["'self'"],
        "object-src": ["'none'"],
    }
}
if env.bool("CSP_REPORT_ONLY", default=False):
    CONTENT_SECURITY_POLICY_REPORT_ONLY = _CSP
else:
    CONTENT_SECURITY_POLICY = _CSP

if PRODUCTION:
    STRIPE_SECRET_KEY = env.str("STRIPE_SECRET_KEY")
    STRIPE_PUBLISHABLE_KEY = env.str("STRIPE_PUBLISHABLE_KEY")
    STRIPE_WEBHOOK_SECRET = env.str("STRIPE_WEBHOOK_SECRET")
else:
    STRIPE_SECRET_KEY = env.str("STRIPE_SECRET_KEY", default="sk_test_local_sandbox")
    STRIPE_PUBLISHABLE_KEY = env.str("STRIPE_PUBLISHABLE_KEY", default="pk_test_local_sandbox")
    STRIPE_WEBHOOK_SECRET = env.str("STRIPE_WEBHOOK_SECRET", default="whsec_local_sandbox")
# Seconds a webhook signature's timestamp may be away from now, either way (Stripe's default).
STRIPE_WEBHOOK_TOLERANCE = env.int("STRIPE_WEBHOOK_TOLERANCE", default=300)
# A webhook body larger than this is refused (400) unread; Stripe's events are a few KiB.
STRIPE_WEBHOOK_MAX_BYTES = env.int("STRIPE_WEBHOOK_MAX_BYTES", default=1024 * 1024)
# How many refused webhook requests are kept for operators (the newest).
STRIPE_WEBHOOK_REFUSALS_KEPT = env.int("STRIPE_WEBHOOK_REFUSALS_KEPT", default=1000)
STRIPE_TIMEOUT_SECONDS = env.int("STRIPE_TIMEOUT_SECONDS", default=20)

# --- Fan-out: the integrations ------------------------------------------------------------
# Outside production every integration defaults to its local stand-in (started by `make run`).
SENDGRID_API_BASE = env.str(
    "SENDGRID_API_BASE", default="https://api.sendgrid.com" if PRODUCTION else "http://127.0.0.1:8425"
)
SENDGRID_FROM_EMAIL = env.str("SENDGRID_FROM_EMAIL", default="shop@example.com")
# Ask SendGrid to validate the emails without sending them (its sandbox mode).
SENDGRID_SANDBOX_MODE = env.bool("SENDGRID_SANDBOX_MODE", default=False)
# Seconds one SendGrid API call may take.
SENDGRID_TIMEOUT_SECONDS = env.float("SENDGRID_TIMEOUT_SECONDS", default=10.0)
# Emails a dispatcher hands the SendGrid adapter at once, sent as one Mail Send call each batch
# where SendGrid's limits allow (one personalization per email; SendGrid takes at most 1,000).
SENDGRID_BATCH_SIZE = env.int("SENDGRID_BATCH_SIZE", default=100)
SHEETS_API_BASE = env.str(
    "SHEETS_API_BASE", default="https://sheets.googleapis.com" if PRODUCTION else "http://127.0.0.1:8426"
)
# The spreadsheet's id (from its URL) and the tab the order rows go to.
SHEETS_SPREADSHEET_ID = env.str("SHEETS_SPREADSHEET_ID", default="demo-orders")
SHEETS_WORKSHEET = env.str("SHEETS_WORKSHEET", default="Orders")
# Seconds one Sheets API call may take (a batch of up to SHEETS_BATCH_ROWS rows).
SHEETS_TIMEOUT_SECONDS = env.float("SHEETS_TIMEOUT_SECONDS", default=20.0)
# Google's limit is 60 write requests a minute per service account; stay under it.
SHEETS_MAX_WRITES_PER_MINUTE = env.int("SHEETS_MAX_WRITES_PER_MINUTE", default=50)
# New rows wait at most this long (or until SHEETS_BATCH_ROWS are due) to share one append.
SHEETS_FLUSH_SECONDS = env.float("SHEETS_FLUSH_SECONDS", default=2.0)
SHEETS_BATCH_ROWS = env.int("SHEETS_BATCH_ROWS", default=500)
# Every AWS client (core.aws): the endpoint (empty: real AWS; outside production the moto
# stand-in) and the region. The keys are below.
AWS_ENDPOINT_URL = env.str("AWS_ENDPOINT_URL", default="" if PRODUCTION else "http://127.0.0.1:8427")
AWS_REGION = env.str("AWS_REGION", default="us-east-1")
# The topic order events are published to (created by `manage.py setup_aws`), by name or ARN
# (empty: derived from the name, the region and the account).
SNS_TOPIC_NAME = env.str("SNS_TOPIC_NAME", default="cis-order-events")
SNS_TOPIC_ARN = env.str("SNS_TOPIC_ARN", default="")
# A FIFO topic: deduplication by delivery key, ordering per order (the name gets ".fifo").
SNS_FIFO = env.bool("SNS_FIFO", default=False)
# The SQS queue `setup_aws` subscribes to the topic so a developer can read what was published.
SNS_DEMO_QUEUE_NAME = env.str("SNS_DEMO_QUEUE_NAME", default="cis-order-events-demo")
if PRODUCTION:
    SENDGRID_API_KEY = env.str("SENDGRID_API_KEY")
    GOOGLE_SERVICE_ACCOUNT_JSON = env.str("GOOGLE_SERVICE_ACCOUNT_JSON")
    # Empty AWS keys: boto3's usual chain (instance role, ~/.aws, its own variables).
    AWS_ACCESS_KEY_ID = env.str("AWS_ACCESS_KEY_ID", default="")
    AWS_SECRET_ACCESS_KEY = env.str("AWS_SECRET_ACCESS_KEY", default="")
else:
    SENDGRID_API_KEY = env.str("SENDGRID_API_KEY", default="SG.local-sandbox-key")
    # Empty: a throwaway key is made at run time whose token_uri is the Sheets stand-in's.
    GOOGLE_SERVICE_ACCOUNT_JSON = env.str("GOOGLE_SERVICE_ACCOUNT_JSON", default="")
    AWS_ACCESS_KEY_ID = env.str("AWS_ACCESS_KEY_ID", default="testing")  # moto accepts any
    AWS_SECRET_ACCESS_KEY = env.str("AWS_SECRET_ACCESS_KEY", default="testing")

# Each integration: its adapter (a dotted path), the order events it acts on, and its retry
# policy (exponential backoff with full jitter: base and cap in seconds, attempts before `dead`).
# The customer is told of every change to a status of orders.domain.NOTIFIED_STATUSES.
ORDER_EVENTS = list(NOTIFIED_EVENT_TYPES)
# A status that followed money back (a refund that failed after it succeeded): the records follow
# it, the customer's email does not.
RECORD_EVENTS = [*ORDER_EVENTS, CORRECTED_EVENT_TYPE]
# After a batch smaller than a full one, a dispatcher waits this long before claiming the next,
# so that under load each call and each ledger write carries many deliveries (the first delivery
# after a quiet spell never waits). Email and SNS; Sheets gathers by SHEETS_FLUSH_SECONDS.
DELIVERY_LINGER_SECONDS = env.float("DELIVERY_LINGER_SECONDS", default=0.1)
INTEGRATIONS = {
    "email": {
        "adapter": "integrations.adapters.sendgrid.SendGridAdapter",
        "events": ORDER_EVENTS,
        "batch": SENDGRID_BATCH_SIZE,
        "retry": {"base": env.float("EMAIL_RETRY_BASE", default=1.0), "cap": 300.0, "max_attempts": 8},
        "linger_seconds": DELIVERY_LINGER_SECONDS,
    },
    "sheets": {
        "adapter": "integrations.adapters.sheets.SheetsAdapter",
        "events": RECORD_EVENTS,
        "retry": {"base": env.float("SHEETS_RETRY_BASE", default=2.0), "cap": 600.0, "max_attempts": 10},
        "max_calls_per_minute": SHEETS_MAX_WRITES_PER_MINUTE,
        # One batch is at most two write calls (append new rows, update known ones).
        "calls_per_batch": 2,
        "flush_seconds": SHEETS_FLUSH_SECONDS,
        "batch": SHEETS_BATCH_ROWS,
        # Sheets cannot append idempotently: one dispatcher at a time, so no row is added twice.
        "exclusive": True,
    },
    "sns": {
        "adapter": "integrations.adapters.sns.SnsAdapter",
        "events": RECORD_EVENTS,
        "retry": {"base": env.float("SNS_RETRY_BASE", default=1.0), "cap": 300.0, "max_attempts": 8},
        "linger_seconds": DELIVERY_LINGER_SECONDS,
    },
}
for _name in env.list("INTEGRATIONS_DISABLED", default=[]):
    INTEGRATIONS.pop(_name, None)
# Circuit breaker, per integration: opens after this many failures in a row, or when this share
# of the calls in the window failed (with at least BREAKER_MIN_CALLS); probes after the cooldown.
BREAKER_FAILURE_THRESHOLD = env.int("BREAKER_FAILURE_THRESHOLD", default=5)
BREAKER_FAILURE_RATIO = env.float("BREAKER_FAILURE_RATIO", default=0.5)
BREAKER_MIN_CALLS = env.int("BREAKER_MIN_CALLS", default=20)
BREAKER_WINDOW_SECONDS = env.int("BREAKER_WINDOW_SECONDS", default=60)
BREAKER_COOLDOWN_SECONDS = env.float("BREAKER_COOLDOWN_SECONDS", default=15.0)
# A delivery claimed by a worker that has not finished after this long is taken back.
DELIVERY_LEASE_SECONDS = env.int("DELIVERY_LEASE_SECONDS", default=120)
# Called (a dotted path) after a transaction that wrote outbox entries commits.
OUTBOX_COMMIT_HOOK = env.str("OUTBOX_COMMIT_HOOK", default="integrations.services.outbox_kick")

# --- Monitoring -----------------------------------------------------------------------------
# Request timings and business counters go to per-minute rows in the database (several web and
# worker processes add to the same rows); each process buffers them for this many seconds first
# (0: write each one through at once, as the test suite does).
MONITORING_ENABLED = env.bool("MONITORING_ENABLED", default=True)
MONITORING_FLUSH_SECONDS = env.float("MONITORING_FLUSH_SECONDS", default=5.0)
# Per-minute metric rows, recorded errors and probe results older than this are deleted (the
# metric retention; at least 1 day is kept whatever it says: the longest window shown is 24 h).
MONITORING_RETENTION_DAYS = env.int("MONITORING_RETENTION_DAYS", default=8)
# Delivered ledger rows (succeeded or skipped) are deleted this many days after they finished,
# and stored Stripe webhook events this many days after they were received (at least 31 days
# whatever it says: Stripe retries an event for 3 days and lists it for 30, and a retry or the
# events sweep must find it stored, or it would be applied again).
# The prune runs every 15 minutes (schedule "monitoring-retention"), RETENTION_PRUNE_BATCH rows
# per DELETE so no prune holds a long lock.
DELIVERY_RETENTION_DAYS = env.int("DELIVERY_RETENTION_DAYS", default=30)
WEBHOOK_EVENT_RETENTION_DAYS = env.int("WEBHOOK_EVENT_RETENTION_DAYS", default=35)
RETENTION_PRUNE_BATCH = env.int("RETENTION_PRUNE_BATCH", default=1000)
# `/metrics` (Prometheus): with a token, scrapers send `Authorization: Bearer <token>`; without
# one, only staff and monitoring clients may read it.
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
# Alerts go to this SNS topic (created by `setup_aws`), one per subject per window.
ALERTS_SNS_TOPIC_NAME = env.str("ALERTS_SNS_TOPIC_NAME", default="cis-ops-alerts")
ALERTS_SNS_TOPIC_ARN = env.str("ALERTS_SNS_TOPIC_ARN", default="")
ALERT_DEDUP_SECONDS = env.int("ALERT_DEDUP_SECONDS", default=1800)
# A spike: this many 5xx responses within one minute.
ALERT_5XX_PER_MINUTE = env.int("ALERT_5XX_PER_MINUTE", default=10)
# The synthetic probes' schedule (minutes between runs; 0: only by hand).
PROBE_INTERVAL_MINUTES = env.int("PROBE_INTERVAL_MINUTES", default=5)
# Seconds one probe call may take (Stripe's probe rounds it up to whole seconds).
PROBE_TIMEOUT_SECONDS = env.float("PROBE_TIMEOUT_SECONDS", default=10.0)
# The Sheets tab the probe writes its timestamp to (never the orders tab).
SHEETS_HEALTH_WORKSHEET = env.str("SHEETS_HEALTH_WORKSHEET", default="_health")
# CloudWatch (on AWS_ENDPOINT_URL: moto outside production). Logs are shipped in batches from a
# background thread (watchtower); metrics with the buffered flush (PutMetricData).
CLOUDWATCH_LOGS_ENABLED = env.bool("CLOUDWATCH_LOGS_ENABLED", default=False)
CLOUDWATCH_METRICS_ENABLED = env.bool("CLOUDWATCH_METRICS_ENABLED", default=False)
CLOUDWATCH_LOG_GROUP = env.str("CLOUDWATCH_LOG_GROUP", default="cis-app")
CLOUDWATCH_NAMESPACE = env.str("CLOUDWATCH_NAMESPACE", default="CIS")
# Seconds between PutMetricData sends, and between watchtower's batches of log lines.
CLOUDWATCH_METRICS_SECONDS = env.float("CLOUDWATCH_METRICS_SECONDS", default=60.0)
CLOUDWATCH_LOGS_SEND_SECONDS = env.float("CLOUDWATCH_LOGS_SEND_SECONDS", default=15.0)

# --- Live status (live/: server-sent events fed by the shared cache) -------------------------
# How often each web process reads the version tokens of its open streams' channels, how often
# an idle stream sends a comment (proxies close silent connections), and how long a stream
# lasts before the browser reconnects (a worker restart or a deploy is never held up for long).
LIVE_POLL_SECONDS = env.float("LIVE_POLL_SECONDS", default=0.5)
LIVE_HEARTBEAT_SECONDS = env.float("LIVE_HEARTBEAT_SECONDS", default=15.0)
LIVE_STREAM_SECONDS = env.float("LIVE_STREAM_SECONDS", default=300.0)

# --- Logging --------------------------------------------------------------------------------
# JSON lines in production (timestamp, level, logger, message, request_id, order_id,
# integration, event); a readable line in development. Known secrets and card numbers are
# masked in every line, whatever its destination.
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
LOG_FORMAT = env.str("LOG_FORMAT", default="json" if PRODUCTION else "console")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "context": {"()": "monitoring.logs.ContextFilter"},
        "expected_client_errors": {"()": "core.log_filters.ExpectedClientErrors"},
    },
    "formatters": {
        "json": {"()": "monitoring.logs.JsonFormatter"},
        "console": {"()": "monitoring.logs.ConsoleFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["context"],
            "level": LOG_LEVEL,
        },
        # The apps' structured events (`extra={"event": ...}`) become monitoring's figures,
        # errors and alerts (monitoring.observer), whatever LOG_LEVEL shows.
        "events": {"class": "monitoring.observer.EventHandler", "level": "DEBUG"},
    },
    "loggers": {
        **{
            app: {"handlers": ["events"], "level": "DEBUG", "propagate": True}
            for app in ("orders", "payments", "integrations")
        },
        # Django's own console handler (DEBUG only) printed each of its records a second time
        # beside the root's: they go to the root's handlers alone (ADMINS is not used).
        "django": {"handlers": [], "level": "INFO", "propagate": True},
        # A 403 or 404 is one warning line, without the traceback Django attaches to it.
        "django.request": {"filters": ["expected_client_errors"], "propagate": True},
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
}
if CLOUDWATCH_LOGS_ENABLED:
    LOGGING["handlers"]["cloudwatch"] = {
        "()": "monitoring.logs.cloudwatch_handler",
        "formatter": "json",
        "filters": ["context"],
        "level": LOG_LEVEL,
    }
    LOGGING["root"]["handlers"].append("cloudwatch")

# --- Security -------------------------------------------------------------------------------
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = False  # the checkout page's script reads it for fetch() calls
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
if PRODUCTION:
    # TLS ends at the load balancer, which sets X-Forwarded-Proto.
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=True)
    # The health endpoint is probed over plain HTTP by the container's healthcheck.
    SECURE_REDIRECT_EXEMPT = [r"^api/monitoring/health$"]
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env.int("DJANGO_SECURE_HSTS_SECONDS", default=60 * 60 * 24 * 365)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
    SECURE_HSTS_PRELOAD = env.bool("DJANGO_SECURE_HSTS_PRELOAD", default=True)
