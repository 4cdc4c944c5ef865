"""Settings, read from the environment once at start-up and validated there.

A missing or malformed setting raises :class:`ConfigError` with one sentence that
names the variable; ``wsgi.py``, ``gunicorn.conf.py`` and the CLI print that line and
stop, so an operator never meets the mistake as a traceback on the first request.

Two ways to run: the *embedded default* (SQLite in ``instance/``, no Stripe key: sandbox
payments, a generated secret key, any host name) and *production* (any other database or a
Stripe key), which must say where it is served (``SHOP_BASE_URL``), sign with a real
``SECRET_KEY`` and choose its payments explicitly: it never falls back to the sandbox.
"""
import ipaddress
import os
import re
import secrets
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlparse
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from limits import parse_many
from limits.storage import SCHEMES as RATELIMIT_STORAGE_SCHEMES

# Stripe's zero-decimal and three-decimal currencies.
NOT_TWO_DECIMAL_CURRENCIES = frozenset((
    "bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv", "xaf", "xof", "xpf",
    "bhd", "jod", "kwd", "omr", "tnd"))

# Where real Stripe Checkout's hosted page lives: the browser is redirected there from our form posts.
STRIPE_CHECKOUT_ORIGIN = "https://checkout.stripe.com"

# Values people paste from tutorials and .env examples; a session signed with one can be forged by anyone.
PLACEHOLDER_SECRETS = frozenset(("changeme", "secret", "dev", "development", "test", "testing", "default", "password",
                                 "example", "placeholder", "insecure", "secretkey", "yoursecretkey", "mysecretkey"))
PLACEHOLDER_WORDS = ("changeme", "changethis", "replaceme", "yoursecret", "placeholder", "insecure", "notsecret")

# Rate limits (Flask-Limiter's notation, several separated by ";"), each a named setting with its default.
RATE_LIMITS = {
    "SHOP_LIMIT_LOGIN": "10 per minute; 50 per hour",
    "SHOP_LIMIT_REGISTER": "5 per minute; 20 per hour",
    "SHOP_LIMIT_CHECKOUT": "20 per minute",
    "SHOP_LIMIT_SUCCESS_PAGE": "60 per minute",
    "SHOP_LIMIT_DISCOUNT": "10 per minute; 50 per hour",
    "SHOP_LIMIT_EMAIL_FORMS": "5 per minute; 20 per hour",
}


class ConfigError(Exception):
    """A setting is missing or malformed; the message names it and says what is expected."""


def _int(env, name, default, low, high):
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None
    if not low <= value <= high:
        raise ConfigError(f"{name} must be between {low} and {high}, got {value}")
    return value


def _flag(env, name, default):
    raw = env.get(name)
    if raw in (None, ""):
        return default
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be on or off (1/0, true/false), got {raw!r}")


def _url(env, name, default=None):
    raw = env.get(name) or default
    if raw is None:
        return None
    parsed = urlparse(raw)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ConfigError(f"{name} must be an http(s) URL, got {raw!r}")
    return raw.rstrip("/")


def _origin(url):
    parsed = urlparse(url)
    return f"{parsed.scheme}://{parsed.netloc}"


@dataclass(frozen=True)
class StripeSettings:
    secret_key: str | None
    webhook_secret: str | None
    api_base: str | None
    payments: str = "stripe"

    @property
    def sandbox(self):
        """The one flag the rest of the shop reads: sandbox payments, chosen explicitly or by the embedded default."""
        return self.payments == "sandbox"


def load_config(env=None, instance_path="instance"):
    """Return the Flask config mapping built from ``env`` (default: ``os.environ``), or raise ConfigError."""
    env = os.environ if env is None else env
    database_url = env.get("DATABASE_URL") or f"sqlite:///{os.path.join(instance_path, 'shop.sqlite')}"
    if "://" not in database_url:
        raise ConfigError("DATABASE_URL must be an SQLAlchemy URL such as mysql+pymysql://user:pw@host/db, "
                          f"got {database_url!r}")
    stripe_settings = _stripe_settings(env)
    config = {
        "SQLALCHEMY_DATABASE_URI": database_url,
        "SQLALCHEMY_ENGINE_OPTIONS": _engine_options(database_url, env),
        "SHOP_CURRENCY": _currency(env),
        "SHOP_MAX_PER_ORDER": _int(env, "SHOP_MAX_PER_ORDER", 10, 1, 100),
        # Live pending orders (unpaid holds) one buyer (email or account) and one client address may
        # have at once; 0 switches a cap off. Counted in the database, so every worker and VM agree.
        "SHOP_MAX_PENDING_PER_BUYER": _int(env, "SHOP_MAX_PENDING_PER_BUYER", 2, 0, 1000),
        "SHOP_MAX_PENDING_PER_IP": _int(env, "SHOP_MAX_PENDING_PER_IP", 20, 0, 100000),
        # Free tickets one address may take per event (held or paid); 0 switches the cap off.
        "SHOP_MAX_FREE_PER_BUYER": _int(env, "SHOP_MAX_FREE_PER_BUYER", 10, 0, 100000),
        # How long after paying the browser that paid sees a guest order's codes on the success page.
        "SHOP_GUEST_TICKET_MINUTES": _int(env, "SHOP_GUEST_TICKET_MINUTES", 60, 0, 24 * 60),
        # The success page asks the provider about one order at most this often, however many reload it.
        "SHOP_PROVIDER_READ_SECONDS": _int(env, "SHOP_PROVIDER_READ_SECONDS", 5, 1, 3600),
        # Stripe refuses a Checkout Session expires_at under 30 minutes or over 24 hours.
        "SHOP_HOLD_MINUTES": _int(env, "SHOP_HOLD_MINUTES", 30, 30, 24 * 60 - 5),
        "WTF_CSRF_TIME_LIMIT": None,  # the token lives as long as the session; an event page left open still works
        # The CSRF token and SameSite cookies guard the forms. Flask-WTF's extra Referer check over https would
        # refuse every form on a page sent with "Referrer-Policy: no-referrer" (login, register): no Referer comes.
        "WTF_CSRF_SSL_STRICT": False,
        "SHOP_HEALTH_TOKEN": _health_token(env),
        # Werkzeug refuses a larger body from its Content-Length before reading it (413).
        "MAX_CONTENT_LENGTH": _int(env, "SHOP_MAX_BODY_BYTES", 1024 * 1024, 1024, 100 * 1024 * 1024),
        # At most this many password hashes at once per process, so a login flood cannot starve the pages.
        "SHOP_HASH_CONCURRENCY": _int(env, "SHOP_HASH_CONCURRENCY", 2, 1, 64),
        "SHOP_HASH_WAIT_SECONDS": _int(env, "SHOP_HASH_WAIT_SECONDS", 5, 0, 60),
        # The time zone of events that name none (rows from before events had one, and new ones by default).
        "SHOP_TIMEZONE": timezone_name(env.get("SHOP_TIMEZONE") or "UTC"),
    }
    config.update(_eventbridge(env))
    config.update(_rate_limits(env))
    config.update(_mail(env))
    secret_key = _secret_key(env, stripe_settings)
    config["STRIPE"] = _choose_payments(env, stripe_settings, database_url)
    config.update(_served_at(env, database_url, config["STRIPE"]))
    # Written only once every other setting passed: a refused start leaves nothing behind.
    config["SECRET_KEY"] = secret_key or _instance_secret(instance_path)
    return config


def _stripe_settings(env):
    secret_key = env.get("STRIPE_SECRET_KEY") or None
    if secret_key and not re.match(r"^(sk|rk)_(test|live)_\w+$", secret_key):
        raise ConfigError("STRIPE_SECRET_KEY must be a Stripe secret key (sk_test_… or sk_live_…)")
    webhook_secret = env.get("STRIPE_WEBHOOK_SECRET") or None
    if webhook_secret and not webhook_secret.startswith("whsec_"):
        raise ConfigError("STRIPE_WEBHOOK_SECRET must be a webhook signing secret (whsec_…)")
    return StripeSettings(secret_key, webhook_secret, _url(env, "STRIPE_API_BASE"))


def _choose_payments(env, settings, database_url):
    """Fail closed: the sandbox (which charges nothing) runs only when chosen, or in the embedded default."""
    chosen = (env.get("SHOP_PAYMENTS") or "").strip().lower()
    if chosen not in ("", "sandbox", "stripe"):
        raise ConfigError(f"SHOP_PAYMENTS must be sandbox or stripe, got {chosen!r}")
    if chosen == "stripe" and not settings.secret_key:
        raise ConfigError("SHOP_PAYMENTS is stripe but STRIPE_SECRET_KEY is not set")
    if chosen == "sandbox" and settings.secret_key:
        raise ConfigError("SHOP_PAYMENTS is sandbox but STRIPE_SECRET_KEY is set: a real key never runs the sandbox, "
                          "unset one of them")
    if not chosen:
        if settings.secret_key:
            chosen = "stripe"
        elif database_url.startswith("sqlite"):
            chosen = "sandbox"  # the embedded default: a demo on this machine
        else:
            raise ConfigError("STRIPE_SECRET_KEY must be set when DATABASE_URL is not SQLite "
                              "(or set SHOP_PAYMENTS=sandbox to sell without charging, on purpose)")
    return StripeSettings(settings.secret_key, settings.webhook_secret, settings.api_base, chosen)


def _currency(env):
    currency = (env.get("SHOP_CURRENCY") or "usd").lower()
    if not re.fullmatch(r"[a-z]{3}", currency):
        raise ConfigError(f"SHOP_CURRENCY must be a three-letter ISO currency code, got {currency!r}")
    if currency in NOT_TWO_DECIMAL_CURRENCIES:
        # Stripe counts these in whole units (jpy) or thousandths (kwd); the shop prices in hundredths.
        raise ConfigError(f"SHOP_CURRENCY must be a currency with two decimals; {currency} has none or three")
    return currency


def _eventbridge(env):
    raw_sources = env.get("SHOP_EVENTBRIDGE_SOURCES") or "aws.partner/stripe.com,stripe.com"
    sources = [s.strip() for s in raw_sources.split(",") if s.strip()]
    queue_url = env.get("SQS_QUEUE_URL") or None
    if queue_url:
        _url(env, "SQS_QUEUE_URL")
    settings = {
        "SHOP_EVENTBRIDGE_SOURCES": tuple(sources),
        "SQS_QUEUE_URL": queue_url,
        "SHOP_SQS_POLLER": _flag(env, "SHOP_SQS_POLLER", bool(queue_url)),
        "AWS_REGION": env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None,
        # SQS long polling waits at most 20 s; tests and `flask shop poll` may ask for less.
        "SHOP_SQS_WAIT_SECONDS": _int(env, "SHOP_SQS_WAIT_SECONDS", 20, 0, 20),
        # How often each server process runs the sweeper (settles orders no event settled).
        "SHOP_SWEEP_SECONDS": _int(env, "SHOP_SWEEP_SECONDS", 60, 5, 3600),
    }
    if settings["SHOP_SQS_POLLER"] and not queue_url:
        raise ConfigError("SHOP_SQS_POLLER is on but SQS_QUEUE_URL is not set")
    if queue_url and not settings["AWS_REGION"]:
        raise ConfigError("SQS_QUEUE_URL is set but neither AWS_REGION nor AWS_DEFAULT_REGION is")
    return settings


def timezone_name(raw, name="SHOP_TIMEZONE"):
    """An IANA time zone name (``Europe/Berlin``) that this machine's zoneinfo (or the tzdata package) knows."""
    value = (raw or "").strip()
    try:
        if not value or value != value.strip("/") or ".." in value:
            raise ValueError(value)
        ZoneInfo(value)
    except (ValueError, ZoneInfoNotFoundError):
        raise ConfigError(f"{name} must be an IANA time zone such as Europe/Berlin or UTC, got {raw!r}") from None
    return value


def _mail(env):
    """Outgoing mail: Flask-Mail's setting names, and how the outbox retries.

    Without ``MAIL_SERVER`` (the embedded default) messages are written to the log and kept in the outbox.
    """
    server = (env.get("MAIL_SERVER") or "").strip() or None
    use_tls, use_ssl = _flag(env, "MAIL_USE_TLS", False), _flag(env, "MAIL_USE_SSL", False)
    if use_tls and use_ssl:
        raise ConfigError("MAIL_USE_TLS and MAIL_USE_SSL are both on: use TLS (STARTTLS, port 587) or SSL (port 465)")
    sender = (env.get("MAIL_DEFAULT_SENDER") or "").strip() or "Ticket Shop <tickets@localhost>"
    if "@" not in sender or "\n" in sender or "\r" in sender:
        raise ConfigError(f"MAIL_DEFAULT_SENDER must be an address such as 'Tickets <tickets@example.com>', "
                          f"got {sender!r}")
    username = env.get("MAIL_USERNAME") or None
    password = env.get("MAIL_PASSWORD") or None
    if (username is None) != (password is None):
        raise ConfigError("MAIL_USERNAME and MAIL_PASSWORD must be set together (or neither)")
    return {
        "MAIL_SERVER": server,
        "MAIL_PORT": _int(env, "MAIL_PORT", 465 if use_ssl else 25, 1, 65535),
        "MAIL_USE_TLS": use_tls,
        "MAIL_USE_SSL": use_ssl,
        "MAIL_USERNAME": username,
        "MAIL_PASSWORD": password,
        "MAIL_DEFAULT_SENDER": sender,
        # Seconds to connect to the mail server and for each of its answers; the sender never hangs on it.
        "SHOP_MAIL_TIMEOUT": _int(env, "SHOP_MAIL_TIMEOUT", 10, 1, 300),
        # The sender thread in each server process; off when `flask shop send-mail` runs elsewhere.
        "SHOP_MAIL_SENDER": _flag(env, "SHOP_MAIL_SENDER", True),
        "SHOP_MAIL_POLL_SECONDS": _int(env, "SHOP_MAIL_POLL_SECONDS", 5, 1, 3600),
        # Retries back off: the first after this many seconds, then twice as long each time, at most an hour.
        "SHOP_MAIL_RETRY_SECONDS": _int(env, "SHOP_MAIL_RETRY_SECONDS", 30, 1, 3600),
        "SHOP_MAIL_MAX_ATTEMPTS": _int(env, "SHOP_MAIL_MAX_ATTEMPTS", 10, 1, 100),
        # How long a signed link in an email works: the order look-up (and the confirmation's link to it),
        # email verification, password reset.
        "SHOP_LOOKUP_LINK_HOURS": _int(env, "SHOP_LOOKUP_LINK_HOURS", 24, 1, 24 * 30),
        "SHOP_VERIFY_LINK_HOURS": _int(env, "SHOP_VERIFY_LINK_HOURS", 72, 1, 24 * 30),
        "SHOP_RESET_LINK_MINUTES": _int(env, "SHOP_RESET_LINK_MINUTES", 60, 5, 24 * 60),
    }


def _rate_limits(env):
    """Flask-Limiter's own settings (RATELIMIT_*) and the shop's named limits, checked with Flask-Limiter's parser."""
    storage = env.get("RATELIMIT_STORAGE_URI") or "memory://"
    if urlparse(storage).scheme not in RATELIMIT_STORAGE_SCHEMES:
        raise ConfigError(f"RATELIMIT_STORAGE_URI must be a storage URI such as redis://host:6379/0, got {storage!r}")
    settings = {
        "RATELIMIT_ENABLED": _flag(env, "RATELIMIT_ENABLED", True),
        "RATELIMIT_STORAGE_URI": storage,
        "RATELIMIT_HEADERS_ENABLED": True,  # Retry-After on a 429 tells a client when to come back
        # A rate-limit store that is down must not take the shop down with it: the request goes through.
        "RATELIMIT_SWALLOW_ERRORS": True,
    }
    for name, default in RATE_LIMITS.items():
        value = env.get(name) or default
        try:
            if not parse_many(value):
                raise ValueError(value)
        except ValueError:
            raise ConfigError(f"{name} must be a rate limit such as '10 per minute' or '5/minute; 50/hour', "
                              f"got {value!r}") from None
        settings[name] = value
    return settings


def _health_token(env):
    token = env.get("SHOP_HEALTH_TOKEN") or None
    if token is not None and len(token) < 16:
        raise ConfigError("SHOP_HEALTH_TOKEN must be at least 16 characters (a random string)")
    return token


def _secret_key(env, stripe_settings):
    """The SECRET_KEY set, or None when the embedded default may generate one; raises for a weak key."""
    key = env.get("SECRET_KEY") or None
    if key is None:
        if env.get("DATABASE_URL") or stripe_settings.secret_key:
            raise ConfigError("SECRET_KEY must be set (a long random string) when the shop runs on a real database "
                              "or real Stripe keys")
        return None
    normalized = re.sub(r"[^a-z0-9]", "", key.lower())
    if normalized in PLACEHOLDER_SECRETS or any(word in normalized for word in PLACEHOLDER_WORDS) \
            or len(set(key)) < 8:
        raise ConfigError("SECRET_KEY must be a random string, not a placeholder such as 'changeme'")
    if len(key.encode()) < 32:
        raise ConfigError("SECRET_KEY must be at least 32 bytes long (python -c 'import secrets; "
                          "print(secrets.token_hex(32))')")
    return key


def _instance_secret(instance_path):
    """The embedded demo may run without SECRET_KEY: keep one in the instance folder so every worker shares it.

    Created readable by its owner only (0600): whoever reads it can sign sessions.
    """
    path = os.path.join(instance_path, "secret_key")
    os.makedirs(instance_path, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    with open(path) as f:
        return f.read().strip()


def _served_at(env, database_url, stripe_settings):
    """Where the shop is served and what follows from it: trusted Host names, cookie flags, proxies, CSP."""
    base_url = _url(env, "SHOP_BASE_URL")
    production = not database_url.startswith("sqlite") or bool(stripe_settings.secret_key)
    if base_url is None and production:
        raise ConfigError("SHOP_BASE_URL must be set (e.g. https://tickets.example.com) when the shop runs on a real "
                          "database or real Stripe keys: links to Stripe and in emails are built from it")
    if base_url is not None and urlparse(base_url).path not in ("", "/"):
        raise ConfigError(f"SHOP_BASE_URL must be the site's origin without a path, got {base_url!r}")
    https = base_url is not None and base_url.startswith("https://")
    lifetime = timedelta(hours=_int(env, "SHOP_SESSION_HOURS", 12, 1, 24 * 30))
    return {
        "SHOP_BASE_URL": base_url,
        # Flask answers 400 to any other Host header, so no URL is ever built from a forged one.
        "TRUSTED_HOSTS": [urlparse(base_url).hostname] if base_url else None,
        "PREFERRED_URL_SCHEME": "https" if https else "http",
        "SESSION_COOKIE_SECURE": https,
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        "REMEMBER_COOKIE_SECURE": https,
        "REMEMBER_COOKIE_HTTPONLY": True,
        "REMEMBER_COOKIE_SAMESITE": "Lax",
        "REMEMBER_COOKIE_DURATION": lifetime,
        # Flask refuses a signed session cookie older than this, permanent or not.
        "PERMANENT_SESSION_LIFETIME": lifetime,
        "SHOP_TRUSTED_PROXIES": _networks(env, "SHOP_TRUSTED_PROXIES", "127.0.0.1,::1"),
        "SHOP_CHECKOUT_ORIGIN": _checkout_origin(stripe_settings),
    }


def _checkout_origin(stripe_settings):
    """Where our checkout form's redirect goes, for CSP form-action: Stripe's hosted page, or our own sandbox page."""
    if stripe_settings.sandbox:
        return "'self'"
    if stripe_settings.api_base:
        return _origin(stripe_settings.api_base)  # a Stripe-compatible server serves its pay page there
    return STRIPE_CHECKOUT_ORIGIN


def _networks(env, name, default):
    raw = env.get(name) or default
    try:
        return tuple(ipaddress.ip_network(part.strip(), strict=False) for part in raw.split(",") if part.strip())
    except ValueError:
        raise ConfigError(f"{name} must be comma-separated IP addresses or networks (10.0.0.0/8), "
                          f"got {raw!r}") from None


def _engine_options(database_url, env):
    if not database_url.startswith("mysql"):
        return {}
    read_timeout = _int(env, "SHOP_DB_READ_TIMEOUT", 10, 1, 3600)
    # A statement waiting for a row lock must end with MariaDB's own "lock wait timeout" (1205), which the
    # checkout retries and which leaves the connection usable, before our socket's read timeout gives up on
    # the connection altogether. MariaDB's default wait (50 s) would outlast the read timeout.
    lock_wait = max(1, read_timeout // 2)
    connect_args = {
        "charset": "utf8mb4",
        "connect_timeout": _int(env, "SHOP_DB_CONNECT_TIMEOUT", 3, 1, 60),
        "read_timeout": read_timeout,
        "write_timeout": _int(env, "SHOP_DB_WRITE_TIMEOUT", 10, 1, 3600),
        "init_command": f"SET SESSION innodb_lock_wait_timeout = {lock_wait}",
    }
    # pool_pre_ping: MariaDB closes idle connections (wait_timeout); ping before use instead of failing a request.
    # READ COMMITTED (Django's choice on MySQL too): every statement sees the latest commits, and an
    # UPDATE whose WHERE does not match releases the row at once instead of holding it to the end of
    # the transaction. Correctness never rests on snapshots here: row locks and conditional UPDATEs decide.
    # Pool: one connection per request thread (GUNICORN_THREADS, 8 by default) plus the poller, the sweeper and
    # the mail sender. Under gevent workers (gunicorn.conf.py's default) a worker runs one statement at a time
    # (shop/ops/greenlets.py) and requests give their connection back before they wait on Stripe, so the same
    # pool leaves room for the few that keep one while they write (a streamed export).
    threads = _int(env, "GUNICORN_THREADS", 8, 1, 1000)
    return {"pool_pre_ping": True, "pool_recycle": 3600, "isolation_level": "READ COMMITTED",
            "pool_size": threads + 3, "max_overflow": 5, "connect_args": connect_args}
