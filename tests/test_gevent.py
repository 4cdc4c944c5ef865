"""The shop as gunicorn.conf.py runs it, in gevent workers: what must hold once sockets are gevent's."""
import os
import subprocess
import sys

from tests.support.gunicorn_server import ROOT, gunicorn_settings

PATCHED_SHOP = """
from gevent import monkey
monkey.patch_all()  # as gunicorn.conf.py does, before the shop is imported

import socket
from shop import create_app
from shop.extensions import db

app = create_app()
with app.app_context():
    connection = db.engine.raw_connection()
    assert db.session.execute(db.text("SELECT 1")).scalar() == 1
    print(type(connection.driver_connection._sock).__module__)
    print(type(socket.socket()).__module__)
"""


def test_gunicorn_runs_gevent_workers_one_per_core_by_default():
    settings = gunicorn_settings("worker_class", "workers", "worker_connections")
    assert settings == {"worker_class": "gevent", "workers": os.cpu_count(), "worker_connections": 1000}


def test_under_gevent_the_database_keeps_the_operating_systems_blocking_sockets(shop_env):
    # Everything else cooperates (a request waiting on Stripe lets the others run); a transaction never
    # yields mid-way, so the row locks it takes last only as long as the database needs.
    out = subprocess.run([sys.executable, "-c", PATCHED_SHOP], cwd=ROOT, env={**os.environ, **shop_env()},
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    database_socket, other_socket = out.stdout.split()
    assert (database_socket, other_socket) == ("socket", "gevent._socket3")
