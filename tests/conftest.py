"""Fixtures: a MariaDB database the tests create, the app on it, and a local Stripe server.

``TEST_DATABASE_URL`` names the server (default: the local MariaDB as root); the tests
create their own database on it, build the schema with the migrations, and empty the
tables between tests.
"""
import json
import os

import pymysql
import pytest
import sqlalchemy as sa
from flask_migrate import upgrade

from shop import create_app
from shop.extensions import db
from tests.stripe_server import FakeStripe

TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL", "mysql+pymysql://root@127.0.0.1:3306/shop_test")
WEBHOOK_SECRET = "whsec_test_secret"
STRIPE_KEY = "sk_test_shop"


def _create_database(url):
    """Drop and create the test database (utf8mb4), connecting to the server without one."""
    parts = sa.make_url(url)
    conn = pymysql.connect(host=parts.host or "127.0.0.1", port=parts.port or 3306, user=parts.username or "root",
                           password=parts.password or "", unix_socket=parts.query.get("unix_socket"))
    with conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS `{parts.database}`")
        cur.execute(f"CREATE DATABASE `{parts.database}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
    conn.close()


@pytest.fixture(scope="session")
def stripe_server():
    """The Stripe-compatible server on loopback, for the whole run."""
    server = FakeStripe(api_key=STRIPE_KEY).start()
    yield server
    server.stop()


def shop_environment(stripe_server, database_url=TEST_DATABASE_URL, **extra):
    """The environment variables a shop process under test runs with."""
    env = {
        "DATABASE_URL": database_url,
        "SECRET_KEY": "test-secret-key",
        "STRIPE_SECRET_KEY": STRIPE_KEY,
        "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "STRIPE_API_BASE": stripe_server.url,
        "SHOP_CURRENCY": "usd",
    }
    env.update(extra)
    return env


@pytest.fixture(scope="session")
def app(stripe_server):
    """The shop on a fresh MariaDB database built by the migrations, talking to the local Stripe."""
    _create_database(TEST_DATABASE_URL)
    saved = dict(os.environ)
    os.environ.update(shop_environment(stripe_server))
    try:
        app = create_app({"TESTING": True})
    finally:
        os.environ.clear()
        os.environ.update(saved)
    with app.app_context():
        upgrade()
    yield app


@pytest.fixture(autouse=True)
def _clean_tables(request):
    """Empty every table after each test that used the database."""
    yield
    if "app" not in request.fixturenames:
        return
    app = request.getfixturevalue("app")
    with app.app_context():
        db.session.remove()
        with db.engine.begin() as conn:
            conn.execute(sa.text("SET FOREIGN_KEY_CHECKS = 0"))
            for table in reversed(db.metadata.sorted_tables):
                conn.execute(table.delete())
            conn.execute(sa.text("SET FOREIGN_KEY_CHECKS = 1"))


@pytest.fixture
def ctx(app):
    """An application context for calling services directly."""
    with app.app_context():
        yield
        db.session.remove()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def form_client(app, client):
    """A client whose form posts skip CSRF (CSRF itself is tested with ``csrf_client``)."""
    app.config["WTF_CSRF_ENABLED"] = False
    yield client
    app.config["WTF_CSRF_ENABLED"] = True


def login(client, user, password="correct horse battery"):
    """Log ``user`` in through the login form (the client must skip CSRF)."""
    response = client.post("/login", data={"email": user.email, "password": password})
    assert response.status_code == 302, response.get_data(as_text=True)


@pytest.fixture
def csrf_client(app):
    """A client for form posts with CSRF enforced: ``csrf_client.token(path)`` reads the page's token."""
    client = app.test_client()

    def token(path):
        import re
        page = client.get(path).get_data(as_text=True)
        return re.search(r'name="csrf_token" (?:type="hidden" )?value="([^"]+)"', page).group(1)

    client.token = token
    return client


def post_webhook(client, stripe_server, event, secret=WEBHOOK_SECRET, timestamp=None, header=None):
    """POST a Stripe event to the webhook route, signed as Stripe signs it (or with ``header``)."""
    payload = json.dumps(event)
    if header is None:
        header = stripe_server.sign(payload, secret, timestamp)
    return client.post("/webhooks/stripe", data=payload, content_type="application/json",
                       headers={"Stripe-Signature": header})
