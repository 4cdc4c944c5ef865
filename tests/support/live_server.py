"""Shops beyond the session ``app``: built from an environment, on their own database, served on loopback.

The browser tests need a real HTTP server (Chromium and the Stripe stand-in both talk to it),
and the sandbox tests need an app without a Stripe key on a database of its own, so they
cannot share the session app. Only tests create these apps (STYLE habit 1).
"""
import threading

import sqlalchemy as sa
from werkzeug.serving import make_server

from shop.extensions import db


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
