"""Fixtures: the shop on MariaDB databases of this run's own, a local Stripe, and what tests do with them.

Ask for them by name; nothing here is imported by a test module. Moto (``aws``), werkzeug
(``live_server``) and gunicorn (``gunicorn_shop``) come from the plugins in ``tests/support/``.

- ``app``, ``ctx``, ``client``, ``form_client``, ``csrf_client``: the session's shop and its clients;
  the tables are emptied after each test that used ``app``.
- ``make``: factories (``make.ticket(capacity=5)``…); ``reload(row)``: the row as the database has it now.
- ``place_order(ticket, quantity=…)``: a pending order placed through the real checkout service.
- ``auth.login(user)`` / ``auth.logout()``; ``webhook.post(event)``: a Stripe event, signed, to the route;
  ``pay(order)``: the order paid through Stripe's webhook; ``staff.login(role)``: an admin, door or buyer logged in.
- ``mailbox``: the SMTP server (aiosmtpd on loopback) every shop under test sends to, emptied for the test;
  ``mailbox.stop()`` takes it down (connection refused), ``mailbox.start()`` brings it back on its port.
- ``shop_env(…)``: the environment of a shop process; ``shop_app(…)``: another app built from it,
  on the session's database or on a new one; ``empty_tables(app)``; ``wait_until(predicate)``.
"""
import contextlib
import time
import uuid

import pytest

from shop.extensions import db
from tests.support.apps import (
    STRIPE_KEY,
    TestDatabases,
    app_from_environment,
    build_schema,
    empty_tables,
    release_connections,
    shop_environment,
)
from tests.support.clients import AuthActions, WebhookSender, csrf_token
from tests.support.factories import Factories, HoldActions, OrderPlacer, reload
from tests.support.smtp_server import SmtpServer
from tests.support.stripe_server import FakeStripe

pytest_plugins = ["tests.support.aws", "tests.support.browser", "tests.support.gunicorn_server",
                  "tests.support.live_server"]


@pytest.fixture(scope="session")
def stripe_server():
    """The Stripe-compatible server on loopback, for the whole run."""
    server = FakeStripe(api_key=STRIPE_KEY).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def smtp_server():
    """The SMTP server on loopback that every shop under test sends its mail to, for the whole run."""
    server = SmtpServer().start()
    yield server
    server.stop()


@pytest.fixture
def mailbox(smtp_server):
    """The SMTP server, emptied for this test, and running again afterwards whatever the test did to it."""
    smtp_server.clear()
    yield smtp_server
    smtp_server.start()


@pytest.fixture(scope="session")
def test_databases():
    """This run's databases on the test server (new names every run and every xdist worker), dropped at the end."""
    databases = TestDatabases()
    yield databases
    databases.drop_all()


@pytest.fixture(scope="session")
def database_url(test_databases):
    """The session's database: where ``app`` and every shop built by ``shop_env()`` keep their rows."""
    return test_databases.create()


@pytest.fixture(scope="session")
def shop_env(stripe_server, smtp_server, database_url):
    """``shop_env(sandbox=False, database_url=…, aws=…, queue_url=…, **settings)``: the environment a shop
    process under test runs with (see ``tests/support/apps.py``); by default on the session's database,
    the local Stripe and the local SMTP server; with ``sandbox=True`` without any Stripe setting."""
    def build(**options):
        options.setdefault("database_url", database_url)
        options.setdefault("stripe_url", stripe_server.url)
        options.setdefault("MAIL_SERVER", smtp_server.host)
        options.setdefault("MAIL_PORT", str(smtp_server.port))
        return shop_environment(**options)
    return build


@pytest.fixture(scope="session")
def shop_app(shop_env, test_databases):
    """``with shop_app(**options) as app:`` a shop app as a process started with ``shop_env(**options)``
    would build it (another worker, a misconfigured process…); its connections are closed afterwards.

    ``new_database="purpose"`` puts it on a database of its own, built by the migrations and dropped
    afterwards; ``testing=False`` leaves Flask's TESTING off.
    """
    @contextlib.contextmanager
    def build(new_database=None, testing=True, **options):
        if new_database:
            options["database_url"] = test_databases.create(new_database)
        app = app_from_environment(shop_env(**options), {"TESTING": True} if testing else None)
        try:
            if new_database:
                build_schema(app)
            yield app
        finally:
            release_connections(app)
            if new_database:
                test_databases.drop(options["database_url"])
    return build


@pytest.fixture(scope="session")
def app(shop_app):
    """The shop on the session's database built by the migrations, talking to the local Stripe."""
    with shop_app() as app:
        build_schema(app)
        yield app


@pytest.fixture(autouse=True)
def _clean_tables(request):
    """Empty every table after each test that used the database."""
    yield
    if "app" in request.fixturenames:
        empty_tables(request.getfixturevalue("app"))


@pytest.fixture(name="empty_tables", scope="session")
def empty_tables_fixture():
    """``empty_tables(app)``: delete every row of a shop app's database (``app``'s own are emptied anyway)."""
    return empty_tables


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


@pytest.fixture
def csrf_client(app):
    """A client for form posts with CSRF enforced: ``csrf_client.token(path)`` reads the page's token."""
    client = app.test_client()
    client.token = lambda path: csrf_token(client, path)
    return client


@pytest.fixture
def auth(form_client):
    """``auth.login(user, password=…)`` and ``auth.logout()`` through the forms, on ``form_client``."""
    return AuthActions(form_client)


@pytest.fixture
def webhook(client, stripe_server):
    """``webhook.post(event, secret=…, timestamp=…, header=…, client=…)``: the event POSTed to the
    webhook route, signed as Stripe signs it (on ``client`` unless another one is given)."""
    return WebhookSender(client, stripe_server)


@pytest.fixture
def pay(webhook, stripe_server):
    """``pay(order)``: the buyer pays on the local Stripe and its signed webhook reaches the shop; returns the
    order as the database has it then."""
    def pay_order(order):
        response = webhook.post(stripe_server.complete(order.checkout_ref))
        assert response.status_code == 200, response.get_data(as_text=True)
        return reload(order)
    return pay_order


@pytest.fixture
def staff(ctx, make, auth):
    """``staff.login("admin" | "door" | "buyer")``: a user with that role logged in on ``form_client``; returns it."""
    class Staff:
        @staticmethod
        def login(role):
            user = make.user(email=f"{role}-{uuid.uuid4().hex[:6]}@example.com",
                             role=None if role == "buyer" else role)
            auth.login(user)
            return user
    return Staff()


@pytest.fixture
def make():
    """Factories writing to the database of the app context in force: ``make.event()``, ``make.ticket()``,
    ``make.discount()``, ``make.user()``."""
    return Factories()


@pytest.fixture
def holds():
    """``holds.end(order)`` (its 30 minutes passed) and ``holds.release_unconfirmed(order)`` (freed on the
    database's word alone, as older code did)."""
    return HoldActions()


@pytest.fixture(name="reload")
def reload_fixture():
    """``reload(row)``: the row as the database has it now."""
    return reload


@pytest.fixture
def place_order(app, ctx):
    """``place_order(ticket, quantity=1, email=…, discount_code="", user=None)``: a pending order placed through
    the real checkout service, in a request context of its own; callable from other threads too."""
    return OrderPlacer(app)


@pytest.fixture
def shop(app, ctx):
    """``shop(*args)``: run ``flask shop ARGS…`` and return click's result.

    The command shares the test's app context, so whatever it added but did not commit is
    rolled back afterwards, as it would die with a real process.
    """
    runner = app.test_cli_runner()

    def run(*args):
        result = runner.invoke(args=["shop", *map(str, args)])
        db.session.rollback()
        return result

    return run


@pytest.fixture(scope="session")
def wait_until():
    """``wait_until(predicate, timeout=10.0)``: poll until it is true; fail the test after ``timeout`` seconds."""
    def wait(predicate, timeout=10.0, interval=0.02):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(interval)
        raise AssertionError(f"not true within {timeout} s: {predicate.__doc__ or predicate}")
    return wait
