"""Settings, read from the environment once at start-up and validated there.

A missing or malformed setting raises :class:`ConfigError` with one sentence that
names the variable; ``wsgi.py`` and the CLI print that line and stop, so an operator
never meets the mistake as a traceback on the first request.
"""
import os
import re
import secrets
from dataclasses import dataclass
from urllib.parse import urlparse

# Stripe's zero-decimal and three-decimal currencies.
NOT_TWO_DECIMAL_CURRENCIES = frozenset(
    "bif clp djf gnf jpy kmf krw mga pyg rwf ugx vnd vuv xaf xof xpf bhd jod kwd omr tnd".split())


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


@dataclass(frozen=True)
class StripeSettings:
    secret_key: str | None
    webhook_secret: str | None
    api_base: str | None

    @property
    def sandbox(self):
        """Sandbox payments run only when no Stripe key is set at all, so a real key can never fall back to them."""
        return not self.secret_key


def load_config(env=None, instance_path="instance"):
    """Return the Flask config mapping built from ``env`` (default: ``os.environ``), or raise ConfigError."""
    env = os.environ if env is None else env
    database_url = env.get("DATABASE_URL") or f"sqlite:///{os.path.join(instance_path, 'shop.sqlite')}"
    if "://" not in database_url:
        raise ConfigError(f"DATABASE_URL must be an SQLAlchemy URL such as mysql+pymysql://user:pw@host/db, got {database_url!r}")

    secret_key = env.get("STRIPE_SECRET_KEY") or None
    if secret_key and not re.match(r"^(sk|rk)_(test|live)_\w+$", secret_key):
        raise ConfigError("STRIPE_SECRET_KEY must be a Stripe secret key (sk_test_… or sk_live_…)")
    webhook_secret = env.get("STRIPE_WEBHOOK_SECRET") or None
    if webhook_secret and not webhook_secret.startswith("whsec_"):
        raise ConfigError("STRIPE_WEBHOOK_SECRET must be a webhook signing secret (whsec_…)")
    stripe_settings = StripeSettings(secret_key, webhook_secret, _url(env, "STRIPE_API_BASE"))

    currency = (env.get("SHOP_CURRENCY") or "usd").lower()
    if not re.fullmatch(r"[a-z]{3}", currency):
        raise ConfigError(f"SHOP_CURRENCY must be a three-letter ISO currency code, got {currency!r}")
    if currency in NOT_TWO_DECIMAL_CURRENCIES:
        # Stripe counts these in whole units (jpy) or thousandths (kwd); the shop prices in hundredths.
        raise ConfigError(f"SHOP_CURRENCY must be a currency with two decimals; {currency} has none or three")

    sources = [s.strip() for s in (env.get("SHOP_EVENTBRIDGE_SOURCES") or "aws.partner/stripe.com,stripe.com").split(",") if s.strip()]
    queue_url = env.get("SQS_QUEUE_URL") or None
    if queue_url:
        _url(env, "SQS_QUEUE_URL")

    config = {
        "SECRET_KEY": env.get("SECRET_KEY") or None,
        "SQLALCHEMY_DATABASE_URI": database_url,
        "SQLALCHEMY_ENGINE_OPTIONS": _engine_options(database_url),
        "STRIPE": stripe_settings,
        "SHOP_CURRENCY": currency,
        "SHOP_MAX_PER_ORDER": _int(env, "SHOP_MAX_PER_ORDER", 10, 1, 100),
        # Live pending orders (unpaid holds) one buyer (email or account) and one client address may
        # have at once; 0 switches a cap off. Counted in the database, so every worker and VM agree.
        "SHOP_MAX_PENDING_PER_BUYER": _int(env, "SHOP_MAX_PENDING_PER_BUYER", 2, 0, 1000),
        "SHOP_MAX_PENDING_PER_IP": _int(env, "SHOP_MAX_PENDING_PER_IP", 20, 0, 100000),
        # How long after paying the browser that paid sees a guest order's codes on the success page.
        "SHOP_GUEST_TICKET_MINUTES": _int(env, "SHOP_GUEST_TICKET_MINUTES", 60, 0, 24 * 60),
        # The success page asks the provider about one order at most this often, however many reload it.
        "SHOP_PROVIDER_READ_SECONDS": _int(env, "SHOP_PROVIDER_READ_SECONDS", 5, 1, 3600),
        # Stripe refuses a Checkout Session expires_at under 30 minutes or over 24 hours.
        "SHOP_HOLD_MINUTES": _int(env, "SHOP_HOLD_MINUTES", 30, 30, 24 * 60 - 5),
        "SHOP_EVENTBRIDGE_SOURCES": tuple(sources),
        "SQS_QUEUE_URL": queue_url,
        "SHOP_SQS_POLLER": _flag(env, "SHOP_SQS_POLLER", bool(queue_url)),
        "AWS_REGION": env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None,
        # SQS long polling waits at most 20 s; tests and `flask shop poll` may ask for less.
        "SHOP_SQS_WAIT_SECONDS": _int(env, "SHOP_SQS_WAIT_SECONDS", 20, 0, 20),
        # How often each server process runs the sweeper (settles orders no event settled).
        "SHOP_SWEEP_SECONDS": _int(env, "SHOP_SWEEP_SECONDS", 60, 5, 3600),
        "WTF_CSRF_TIME_LIMIT": None,  # the token lives as long as the session; an event page left open still works
    }
    if config["SHOP_SQS_POLLER"] and not queue_url:
        raise ConfigError("SHOP_SQS_POLLER is on but SQS_QUEUE_URL is not set")
    if queue_url and not config["AWS_REGION"]:
        raise ConfigError("SQS_QUEUE_URL is set but neither AWS_REGION nor AWS_DEFAULT_REGION is")
    if not config["SECRET_KEY"]:
        if env.get("DATABASE_URL") or not stripe_settings.sandbox:
            raise ConfigError("SECRET_KEY must be set (a long random string) when the shop runs on a real database or real Stripe keys")
        config["SECRET_KEY"] = _instance_secret(instance_path)
    return config


def _instance_secret(instance_path):
    """The embedded demo may run without SECRET_KEY: keep one in the instance folder so every worker shares it."""
    path = os.path.join(instance_path, "secret_key")
    os.makedirs(instance_path, exist_ok=True)
    try:
        with open(path, "x") as f:
            f.write(secrets.token_hex(32))
    except FileExistsError:
        pass
    with open(path) as f:
        return f.read().strip()


def _engine_options(database_url):
    if database_url.startswith("mysql"):
        # pool_pre_ping: MariaDB closes idle connections (wait_timeout); ping before use instead of failing a request.
        # READ COMMITTED (Django's choice on MySQL too): every statement sees the latest commits, and an
        # UPDATE whose WHERE does not match releases the row at once instead of holding it to the end of
        # the transaction. Correctness never rests on snapshots here: row locks and conditional UPDATEs decide.
        # Pool: one connection per request thread (gunicorn's 8 by default) plus the poller and the sweeper.
        return {"pool_pre_ping": True, "pool_recycle": 3600, "isolation_level": "READ COMMITTED",
                "pool_size": 10, "max_overflow": 5, "connect_args": {"charset": "utf8mb4"}}
    return {}
