"""Shops beyond the session ``app``: built from an environment, on their own database, served on loopback.

The browser tests need a real HTTP server (Chromium and the Stripe stand-in both talk to it),
and the sandbox tests need an app without a Stripe key on a database of its own, so they
cannot share the session app. Only tests create these apps (STYLE habit 1).
"""
import os
import threading

import sqlalchemy as sa
from flask_migrate import upgrade
from werkzeug.serving import make_server

from shop import create_app
from shop.extensions import db
from tests.conftest import TEST_DATABASE_URL, _create_database


def database_url(name):
    """The URL of database ``name`` on the test server (the one ``TEST_DATABASE_URL`` names)."""
    return sa.make_url(TEST_DATABASE_URL).set(database=name).render_as_string(hide_password=False)


def sandbox_environment(database_url):
    """What a shop with no Stripe key runs with: the settings that would pick Stripe are blanked, not inherited."""
    return {
        "DATABASE_URL": database_url,
        "SECRET_KEY": "test-secret-key",
        "SHOP_CURRENCY": "usd",
        "STRIPE_SECRET_KEY": "",
        "STRIPE_WEBHOOK_SECRET": "",
        "STRIPE_API_BASE": "",
    }


def app_from_environment(env, test_config=None):
    """``create_app`` as a process started with ``env`` (on top of the current environment) would run it."""
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        return create_app(test_config)
    finally:
        os.environ.clear()
        os.environ.update(saved)


def app_on_new_database(env, test_config=None):
    """An app on a freshly created database (``env["DATABASE_URL"]``) whose schema the migrations built."""
    _create_database(env["DATABASE_URL"])
    app = app_from_environment(env, test_config)
    with app.app_context():
        upgrade()
    return app


def empty_tables(app):
    """Delete every row of ``app``'s database (as conftest does for the session app between tests)."""
    with app.app_context():
        db.session.remove()
        with db.engine.begin() as conn:
            conn.execute(sa.text("SET FOREIGN_KEY_CHECKS = 0"))
            for table in reversed(db.metadata.sorted_tables):
                conn.execute(table.delete())
            conn.execute(sa.text("SET FOREIGN_KEY_CHECKS = 1"))


def drop_database(app):
    """Release ``app``'s connections and drop its database."""
    with app.app_context():
        name = db.engine.url.database
        db.session.remove()
        with db.engine.begin() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS `{name}`"))
        db.engine.dispose()


class LiveServer:
    """``app`` served by werkzeug on a free loopback port, one thread per request, in a daemon thread."""

    def __init__(self, app):
        self._server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="live-shop", daemon=True)

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
