"""The shop under gunicorn with the repository's own gunicorn.conf.py, as production runs it.

A pytest plugin: ``with gunicorn_shop(workers=4) as served:`` runs it on the session's database.
"""
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from typing import NamedTuple

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="session")
def gunicorn_shop(shop_env):
    """``with gunicorn_shop(workers=4, **settings) as served:`` (``served.url``, ``served.log_path``,
    ``served.process``): gunicorn on a free loopback port with the environment ``shop_env(**settings)`` builds.
    ``sqs_poller=True`` lets each worker run its SQS poller (give ``shop_env`` an ``aws`` and a ``queue_url``)."""
    def serve(workers=4, sqs_poller=False, **settings):
        return gunicorn_server(shop_env(**settings), workers=workers, sqs_poller=sqs_poller)
    return serve


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServedShop(NamedTuple):
    url: str
    log_path: str
    process: subprocess.Popen | None = None  # the gunicorn master, for tests that signal it


@contextlib.contextmanager
def gunicorn_server(shop_env, workers=4, sqs_poller=False):
    """Run gunicorn on a free loopback port with ``shop_env``; yields its URL, log file and master process.

    ``workers=None`` leaves their number to gunicorn.conf.py (``WEB_CONCURRENCY``, or one per core).
    The workers' SQS pollers stay off unless ``sqs_poller`` (then ``shop_env`` decides, by its queue).
    """
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    # Served under its own address: links to Stripe are built from SHOP_BASE_URL, and its host is trusted.
    env = {**os.environ, **shop_env, "PORT": str(port), "SHOP_SQS_POLLER": "off", "SHOP_BASE_URL": base_url}
    if sqs_poller:
        # Left to shop_env, whose default is on exactly when it names a queue (SQS_QUEUE_URL), as in production.
        env["SHOP_SQS_POLLER"] = shop_env.get("SHOP_SQS_POLLER", "")
    if workers is not None:
        env["WEB_CONCURRENCY"] = str(workers)
    # The log goes to a file: a pipe nobody reads fills up and blocks every worker mid-request.
    log = tempfile.NamedTemporaryFile(prefix="gunicorn-", suffix=".log", delete=False)
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "--bind", f"127.0.0.1:{port}", "wsgi:app"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{base_url}/healthz", timeout=2):
                    break
            except OSError as exc:
                if process.poll() is not None or time.monotonic() > deadline:
                    with open(log.name) as f:
                        raise RuntimeError(f"gunicorn did not start: {f.read()[-2000:]}") from exc
                time.sleep(0.2)
        yield ServedShop(base_url, log.name, process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()
        os.unlink(log.name)


def gunicorn_settings(*names):
    """``{name: value}`` of settings as gunicorn.conf.py sets them from this environment.

    Read in a process of its own: loading the file patches the process for gevent, which only
    gunicorn's own processes may be.
    """
    script = ("import json, runpy, sys; ns = runpy.run_path('gunicorn.conf.py'); "
              "print(json.dumps({k: ns.get(k) for k in sys.argv[1:]}))")
    out = subprocess.run([sys.executable, "-c", script, *names], cwd=ROOT, capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])
