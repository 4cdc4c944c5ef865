"""Start-up settings: production fails closed (payments, base URL, secret key), and gunicorn stops on a bad one."""
import logging
import os
import stat
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from shop.config import ConfigError, load_config
from shop.extensions import db
from tests.support.apps import app_from_environment
from tests.support.gunicorn_server import free_port

ROOT = Path(__file__).resolve().parent.parent
RANDOM_KEY = "9b2f6c1e8a4d7f03c5e1b9a2d6f4c8e0"
PRODUCTION = {"DATABASE_URL": "mysql+pymysql://shop:pw@db.internal/shop", "SECRET_KEY": RANDOM_KEY,
              "STRIPE_SECRET_KEY": "sk_live_abc123", "SHOP_BASE_URL": "https://tickets.example.com"}


def refusal(env, tmp_path):
    """The one-line message load_config refuses ``env`` with."""
    with pytest.raises(ConfigError) as raised:
        load_config(env, instance_path=tmp_path)
    message = str(raised.value)
    assert "\n" not in message
    return message


def without(env, *names):
    return {name: value for name, value in env.items() if name not in names}


def test_production_settings_are_accepted(tmp_path):
    config = load_config(PRODUCTION, instance_path=tmp_path)
    assert config["STRIPE"].sandbox is False and config["SHOP_BASE_URL"] == "https://tickets.example.com"
    assert config["TRUSTED_HOSTS"] == ["tickets.example.com"]


def test_a_mariadb_url_without_a_stripe_key_refuses_to_start(tmp_path):
    message = refusal(without(PRODUCTION, "STRIPE_SECRET_KEY"), tmp_path)
    assert message.startswith("STRIPE_SECRET_KEY must be set") and "SHOP_PAYMENTS=sandbox" in message
    assert not (tmp_path / "secret_key").exists()


def test_explicit_sandbox_payments_run_on_mariadb(tmp_path):
    env = {**without(PRODUCTION, "STRIPE_SECRET_KEY"), "SHOP_PAYMENTS": "sandbox"}
    config = load_config(env, instance_path=tmp_path)
    assert config["STRIPE"].sandbox is True and config["SHOP_CHECKOUT_ORIGIN"] == "'self'"


def test_an_app_with_explicit_sandbox_payments_serves_its_pages(app, shop_env):
    app = app_from_environment(shop_env(sandbox=True), {"TESTING": True})
    assert app.extensions["shop.payments"].name == "sandbox"
    assert "Sandbox payments" in app.test_client().get("/login").get_data(as_text=True)


@pytest.mark.parametrize("setting, start", [
    ({"SHOP_PAYMENTS": "stripe", "STRIPE_SECRET_KEY": ""}, "SHOP_PAYMENTS is stripe but STRIPE_SECRET_KEY is not set"),
    ({"SHOP_PAYMENTS": "sandbox"}, "SHOP_PAYMENTS is sandbox but STRIPE_SECRET_KEY is set"),
    ({"SHOP_PAYMENTS": "paypal"}, "SHOP_PAYMENTS must be sandbox or stripe"),
], ids=["stripe-without-key", "sandbox-with-a-real-key", "unknown"])
def test_payments_must_be_chosen_consistently(tmp_path, setting, start):
    assert refusal({**PRODUCTION, **setting}, tmp_path).startswith(start)


def test_the_embedded_default_needs_no_setting_and_sells_in_the_sandbox(tmp_path):
    config = load_config({}, instance_path=tmp_path)
    assert config["STRIPE"].sandbox is True
    assert config["SHOP_BASE_URL"] is None and config["TRUSTED_HOSTS"] is None
    assert config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite:///")


def test_the_generated_demo_key_is_readable_by_its_owner_only(tmp_path):
    key = load_config({}, instance_path=tmp_path)["SECRET_KEY"]
    path = tmp_path / "secret_key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(key) == 64 and path.read_text() == key
    assert load_config({}, instance_path=tmp_path)["SECRET_KEY"] == key  # every worker reads the same one


@pytest.mark.parametrize("secret", [
    "too-short-but-random-4f1c9e",
    "changeme",
    "changeme-changeme-changeme-changeme",
    "please-replace-me-with-something-long",
    "your-secret-key",
    "x" * 40,
], ids=["short", "changeme", "changeme-long", "replace-me", "your-secret-key", "one-character"])
def test_a_short_or_placeholder_secret_key_is_refused(tmp_path, secret):
    assert refusal({**PRODUCTION, "SECRET_KEY": secret}, tmp_path).startswith("SECRET_KEY must be ")


def test_shop_base_url_is_required_in_production(tmp_path):
    assert refusal(without(PRODUCTION, "SHOP_BASE_URL"), tmp_path).startswith("SHOP_BASE_URL must be set")
    # A Stripe key alone makes it production too, even on SQLite.
    stripe_on_sqlite = {"SECRET_KEY": RANDOM_KEY, "STRIPE_SECRET_KEY": "sk_test_abc123"}
    assert refusal(stripe_on_sqlite, tmp_path).startswith("SHOP_BASE_URL must be set")


@pytest.mark.parametrize("base_url", [
    "tickets.example.com", "ftp://tickets.example.com", "https://tickets.example.com/shop"])
def test_shop_base_url_must_be_an_origin(tmp_path, base_url):
    assert refusal({**PRODUCTION, "SHOP_BASE_URL": base_url}, tmp_path).startswith("SHOP_BASE_URL must be ")


@pytest.mark.parametrize("setting, variable", [
    ({"SHOP_TRUSTED_PROXIES": "10.0.0.0/8, proxy.internal"}, "SHOP_TRUSTED_PROXIES"),
    ({"SHOP_LIMIT_LOGIN": "often"}, "SHOP_LIMIT_LOGIN"),
    ({"RATELIMIT_STORAGE_URI": "postgres://limits"}, "RATELIMIT_STORAGE_URI"),
    ({"RATELIMIT_ENABLED": "maybe"}, "RATELIMIT_ENABLED"),
    ({"SHOP_HEALTH_TOKEN": "short"}, "SHOP_HEALTH_TOKEN"),
    ({"SHOP_DB_READ_TIMEOUT": "0"}, "SHOP_DB_READ_TIMEOUT"),
    ({"SHOP_MAX_BODY_BYTES": "1MB"}, "SHOP_MAX_BODY_BYTES"),
    ({"SHOP_HASH_CONCURRENCY": "0"}, "SHOP_HASH_CONCURRENCY"),
    ({"SHOP_SESSION_HOURS": "forever"}, "SHOP_SESSION_HOURS"),
])
def test_malformed_hardening_settings_are_refused_by_name(tmp_path, setting, variable):
    assert refusal({**PRODUCTION, **setting}, tmp_path).startswith(f"{variable} must ")


def test_defaults_of_the_hardening_settings(tmp_path):
    config = load_config(PRODUCTION, instance_path=tmp_path)
    assert config["MAX_CONTENT_LENGTH"] == 1024 * 1024
    assert config["PERMANENT_SESSION_LIFETIME"] == timedelta(hours=12)
    assert config["SHOP_HASH_CONCURRENCY"] == 2
    assert config["RATELIMIT_ENABLED"] is True and config["RATELIMIT_STORAGE_URI"] == "memory://"
    assert config["SHOP_LIMIT_LOGIN"] == "10 per minute; 50 per hour"
    assert config["SHOP_CHECKOUT_ORIGIN"] == "https://checkout.stripe.com"
    assert [str(n) for n in config["SHOP_TRUSTED_PROXIES"]] == ["127.0.0.1/32", "::1/128"]
    assert (config["SESSION_COOKIE_SECURE"], config["SESSION_COOKIE_SAMESITE"], config["SESSION_COOKIE_HTTPONLY"]) == \
        (True, "Lax", True)
    assert (config["REMEMBER_COOKIE_SECURE"], config["REMEMBER_COOKIE_SAMESITE"]) == (True, "Lax")


def test_an_http_base_url_sends_cookies_without_secure(tmp_path):
    config = load_config({**PRODUCTION, "SHOP_BASE_URL": "http://shop.internal:8000"}, instance_path=tmp_path)
    assert config["SESSION_COOKIE_SECURE"] is False and config["TRUSTED_HOSTS"] == ["shop.internal"]


def test_the_checkout_origin_follows_a_stripe_compatible_api_base(tmp_path):
    config = load_config({**PRODUCTION, "STRIPE_API_BASE": "http://127.0.0.1:12111/"}, instance_path=tmp_path)
    assert config["SHOP_CHECKOUT_ORIGIN"] == "http://127.0.0.1:12111"


def test_database_client_timeouts_and_a_lock_wait_below_the_read_timeout(tmp_path):
    config = load_config({**PRODUCTION, "SHOP_DB_READ_TIMEOUT": "8"}, instance_path=tmp_path)
    options = config["SQLALCHEMY_ENGINE_OPTIONS"]
    connect_args = options["connect_args"]
    assert (connect_args["connect_timeout"], connect_args["read_timeout"], connect_args["write_timeout"]) == (3, 8, 10)
    assert connect_args["init_command"] == "SET SESSION innodb_lock_wait_timeout = 4"
    assert connect_args["charset"] == "utf8mb4"
    assert options["pool_pre_ping"] is True and options["isolation_level"] == "READ COMMITTED"


def test_the_database_pool_has_a_connection_for_every_request_thread_and_the_background_ones(tmp_path):
    default = load_config(PRODUCTION, instance_path=tmp_path)["SQLALCHEMY_ENGINE_OPTIONS"]
    more = load_config({**PRODUCTION, "GUNICORN_THREADS": "32"}, instance_path=tmp_path)["SQLALCHEMY_ENGINE_OPTIONS"]
    assert default["pool_size"] == 8 + 3 and more["pool_size"] == 32 + 3
    assert "GUNICORN_THREADS must be a whole number" in refusal({**PRODUCTION, "GUNICORN_THREADS": "many"}, tmp_path)


def test_connections_carry_the_lock_wait_timeout(app):
    """The init_command runs on every new connection to MariaDB (the tests' database runs with the defaults)."""
    with app.app_context(), db.engine.connect() as conn:
        assert conn.execute(text("SELECT @@SESSION.innodb_lock_wait_timeout")).scalar_one() == 5


def test_the_stripe_library_logs_warnings_only(app):
    assert logging.getLogger("stripe").getEffectiveLevel() == logging.WARNING


def clean_environment(**settings):
    env = {name: value for name, value in os.environ.items()
           if not name.startswith(("STRIPE_", "SHOP_", "SQS_", "AWS_", "RATELIMIT_"))
           and name not in ("DATABASE_URL", "SECRET_KEY")}
    env.update(settings)
    return env


def run_gunicorn(env, config_file="gunicorn.conf.py", timeout=30, workers=2):
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "gunicorn", "-c", config_file, "--bind", f"127.0.0.1:{free_port()}",
                             "--workers", str(workers), "wsgi:app"], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=timeout, check=False)
    return result, time.monotonic() - started


@pytest.mark.slow
def test_gunicorn_with_a_bad_setting_stops_at_once_with_one_line():
    env = clean_environment(DATABASE_URL="mysql+pymysql://shop@127.0.0.1/shop", SECRET_KEY=RANDOM_KEY,
                            SHOP_BASE_URL="http://127.0.0.1")

    result, seconds = run_gunicorn(env)

    assert result.returncode != 0 and seconds < 10
    errors = [line for line in result.stderr.splitlines() if "configuration error" in line]
    expected = ("shop: configuration error: STRIPE_SECRET_KEY must be set when DATABASE_URL is not SQLite "
                "(or set SHOP_PAYMENTS=sandbox to sell without charging, on purpose)")
    assert errors == [expected], result.stderr
    assert "Booting worker" not in result.stderr  # stopped in the master, before any worker


def test_a_worker_that_cannot_load_the_app_halts_gunicorn_instead_of_respawning(tmp_path):
    """Without the master's check (an empty config file), each worker exits with gunicorn's boot-error status."""
    empty_config = tmp_path / "empty.conf.py"
    empty_config.write_text("")
    env = clean_environment(DATABASE_URL="mysql+pymysql://shop@127.0.0.1/shop", SECRET_KEY="changeme")

    # One worker: when two fail at once, gunicorn's master may meet the second failure while it halts for the
    # first and exit with 1 instead of the boot-error status.
    result, seconds = run_gunicorn(env, config_file=str(empty_config), workers=1)

    assert result.returncode == 3 and seconds < 20, result.stderr[-2000:]
    assert "shop: configuration error: SECRET_KEY must be a random string" in result.stderr
    assert "Worker failed to boot" in result.stderr
