"""The shop served by werkzeug on loopback, for tests that need a real HTTP server.

The browser tests need one: Chromium and the Stripe stand-in both talk to the shop over HTTP.
A pytest plugin: ``with live_server(app) as url:`` serves ``app`` until the block ends.
"""
import contextlib
import threading

import pytest
from werkzeug.serving import make_server


@pytest.fixture(scope="session")
def live_server():
    """``with live_server(app) as url:`` serves ``app`` on a free loopback port until the block ends."""
    return _serve


@contextlib.contextmanager
def _serve(app):
    server = LiveServer(app).start()
    # The port is known only once the server listens: the base URL (and the Host it trusts) are set then.
    app.config.update(SHOP_BASE_URL=server.url, TRUSTED_HOSTS=["127.0.0.1"])
    try:
        yield server.url
    finally:
        server.stop()


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
