"""Fixtures: the app on a MariaDB database the tests create (see ``tests/apps.py``), and a local Stripe server.

The tables are emptied between tests.
"""
import json

import pytest

from shop.extensions import db
from tests.support.apps import TEST_DATABASE_URL, app_on_new_database, empty_tables
from tests.support.stripe_server import FakeStripe

WEBHOOK_SECRET = "whsec_test_secret"
STRIPE_KEY = "sk_test_shop"


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
    return app_on_new_database(shop_environment(stripe_server), {"TESTING": True})


@pytest.fixture(autouse=True)
def _clean_tables(request):
    """Empty every table after each test that used the database."""
    yield
    if "app" in request.fixturenames:
        empty_tables(request.getfixturevalue("app"))


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
