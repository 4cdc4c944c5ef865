"""Test databases on MariaDB, the environment a shop process runs with, and apps built from it.

``TEST_DATABASE_URL`` names the server and the stem of every database name (default: ``shop_test``
on the local MariaDB as root). A run creates its databases as ``<stem>_<run>`` and
``<stem>_<run>_<purpose>``, where ``<run>`` is new for every run and every pytest-xdist worker, so
two runs (or two workers) never share one; only the migrations build their schema.
"""
import os
import uuid

import pymysql
import sqlalchemy as sa
from flask_migrate import upgrade

from shop import create_app
from shop.extensions import db

TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL", "mysql+pymysql://root@127.0.0.1:3306/shop_test")
STRIPE_KEY = "sk_test_shop"
WEBHOOK_SECRET = "whsec_test_secret"


class TestDatabases:
    """The databases one run creates on the test server; ``drop_all`` removes what is left of them."""

    __test__ = False  # not a test class, whatever its name says to pytest

    def __init__(self, server_url=TEST_DATABASE_URL, run=None):
        self.server = sa.make_url(server_url)
        # MariaDB names are at most 64 characters: the stem, 8 hex digits and a short purpose fit.
        self.stem = f"{self.server.database}_{run or uuid.uuid4().hex[:8]}"
        self.created = []

    def url(self, purpose=None):
        """The URL of this run's database for ``purpose`` (``None``: the run's main database)."""
        name = f"{self.stem}_{purpose}" if purpose else self.stem
        return self.server.set(database=name).render_as_string(hide_password=False)

    def create(self, purpose=None):
        """Create this run's database for ``purpose`` (utf8mb4, empty) and return its URL."""
        url = self.recreate(self.url(purpose))
        self.created.append(url)
        return url

    def recreate(self, url):
        """Drop and create the database ``url`` names (utf8mb4, empty); it is not dropped by ``drop_all``."""
        name = sa.make_url(url).database
        self._execute(f"DROP DATABASE IF EXISTS `{name}`",
                      f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
        return url

    def drop(self, url):
        """Drop one database this run created."""
        self._execute(f"DROP DATABASE IF EXISTS `{sa.make_url(url).database}`")
        self.created.remove(url)

    def drop_all(self):
        for url in list(self.created):
            self.drop(url)

    def _execute(self, *statements):
        # Connected to the server without a database: the one named may not exist yet, or be going.
        conn = pymysql.connect(host=self.server.host or "127.0.0.1", port=self.server.port or 3306,
                               user=self.server.username or "root", password=self.server.password or "",
                               unix_socket=self.server.query.get("unix_socket"))
        try:
            with conn.cursor() as cur:
                for statement in statements:
                    cur.execute(statement)
        finally:
            conn.close()


def shop_environment(*, database_url, stripe_url="", sandbox=False, aws=None, queue_url=None, **settings):
    """The environment variables a shop process under test runs with.

    With ``sandbox`` the settings that would pick Stripe are blanked, not inherited; otherwise the
    shop talks to the Stripe-compatible server at ``stripe_url``. ``aws`` (a :class:`tests.support.aws.Aws`)
    points boto3 at moto; ``queue_url`` turns the SQS inlet on, with a 1 s long poll that keeps the
    tests' shutdowns short. ``settings`` (``SHOP_…=…``) come last and win.
    """
    env = {"DATABASE_URL": database_url, "SECRET_KEY": "tests-only-4f1c9e27b8d05a63c2e9f71b", "SHOP_CURRENCY": "usd",
           "SHOP_BASE_URL": "http://localhost",  # the Flask test client's host; served shops set their own
           "RATELIMIT_ENABLED": "false",  # the rate-limit tests switch them on for their own app
           # Most tests place many orders from one address and email; the caps have tests of their own.
           "SHOP_MAX_PENDING_PER_BUYER": "0", "SHOP_MAX_PENDING_PER_IP": "0",
           # Mail retries come quickly in tests (a real shop waits 30 s, then twice as long each time).
           "MAIL_DEFAULT_SENDER": "Ticket Shop <tickets@shop.test>", "SHOP_MAIL_RETRY_SECONDS": "1",
           "SHOP_MAIL_POLL_SECONDS": "1", "SHOP_MAIL_TIMEOUT": "5"}
    if sandbox:
        env.update({"SHOP_PAYMENTS": "sandbox", "STRIPE_SECRET_KEY": "", "STRIPE_WEBHOOK_SECRET": "",
                    "STRIPE_API_BASE": ""})
    else:
        env.update({"STRIPE_SECRET_KEY": STRIPE_KEY, "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
                    "STRIPE_API_BASE": stripe_url})
    if queue_url:
        env.update({"SQS_QUEUE_URL": queue_url, "SHOP_SQS_WAIT_SECONDS": "1"})
    if aws is not None:
        env.update(aws.environment)
    env.update(settings)
    return env


def app_from_environment(env, test_config=None):
    """``create_app`` as a process started with ``env`` (on top of the current environment) would run it."""
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        return create_app(test_config)
    finally:
        os.environ.clear()
        os.environ.update(saved)


def build_schema(app):
    """Run the migrations on ``app``'s (empty) database."""
    with app.app_context():
        upgrade()


def release_connections(app):
    """Close ``app``'s pooled connections, so its database can be dropped."""
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


def empty_tables(app):
    """Delete every row of ``app``'s database."""
    with app.app_context():
        db.session.remove()
        with db.engine.begin() as conn:
            conn.execute(sa.text("SET FOREIGN_KEY_CHECKS = 0"))
            for table in reversed(db.metadata.sorted_tables):
                conn.execute(table.delete())
            conn.execute(sa.text("SET FOREIGN_KEY_CHECKS = 1"))
