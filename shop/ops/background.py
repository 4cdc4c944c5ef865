"""The server's background threads: the SQS poller (when enabled), the sweeper and the mail sender.

Started once per serving process, never at import time: by ``gunicorn.conf.py`` in each
worker after it has loaded the app (so never in the master, and ``--preload`` forks no
threads), and by ``wsgi.py`` under the development server (``flask run``). Stopping sets a
flag, lets the poller finish its long poll and batch, and joins within a timeout that
gunicorn's ``graceful_timeout`` exceeds.
"""
import logging
import os
import threading
import time
from dataclasses import dataclass, field

import click
from flask.cli import run_command
from flask.helpers import get_debug_flag
from werkzeug.serving import is_running_from_reloader

from ..delivery.sqs_poller import SqsPoller
from ..extensions import db
from ..services.outbox import BATCH, send_due
from ..services.sweeper import sweep

logger = logging.getLogger(__name__)


@dataclass
class _Running:
    pid: int
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list = field(default_factory=list)


_lock = threading.Lock()
_running = None


def start(app):
    """Start the sweeper, the mail sender (unless ``SHOP_MAIL_SENDER`` is off) and the poller when
    ``SHOP_SQS_POLLER`` is on, in this process; a second call does nothing.

    Returns the running threads. The pid check makes a forked child (gunicorn ``--preload``)
    start its own threads instead of trusting state copied from its parent.
    """
    global _running
    with _lock:
        if _running is not None and _running.pid == os.getpid():
            return list(_running.threads)
        running = _Running(pid=os.getpid())
        running.threads.append(threading.Thread(
            target=run_sweeper, args=(app, running.stop, app.config["SHOP_SWEEP_SECONDS"]),
            name="shop-sweeper", daemon=True))
        if app.config["SHOP_MAIL_SENDER"]:
            running.threads.append(threading.Thread(
                target=run_mail_sender, args=(app, running.stop, app.config["SHOP_MAIL_POLL_SECONDS"]),
                name="shop-mail-sender", daemon=True))
        if app.config["SHOP_SQS_POLLER"]:
            running.threads.append(threading.Thread(
                target=SqsPoller(app).run, args=(running.stop,), name="shop-sqs-poller", daemon=True))
        for thread in running.threads:
            thread.start()
        _running = running
        logger.info("background threads started in pid %s: %s", running.pid, ", ".join(t.name for t in running.threads))
        return list(running.threads)


def request_stop():
    """Ask the threads to stop, without waiting (gunicorn's ``worker_int``)."""
    with _lock:
        if _running is not None and _running.pid == os.getpid():
            _running.stop.set()


def stop(timeout=25):
    """Stop the threads and wait up to ``timeout`` seconds in all; True when every one has ended."""
    global _running
    with _lock:
        running, _running = _running, None
    if running is None or running.pid != os.getpid():
        return True
    running.stop.set()
    deadline = time.monotonic() + timeout
    for thread in running.threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    stragglers = [t.name for t in running.threads if t.is_alive()]
    if stragglers:
        logger.warning("background threads still running after %s s: %s", timeout, ", ".join(stragglers))
    else:
        logger.info("background threads stopped in pid %s", running.pid)
    return not stragglers


def run_sweeper(app, stop_event, every):
    """Run ``sweep()`` every ``every`` seconds until ``stop_event`` is set; a failed sweep is logged and retried."""
    while not stop_event.wait(every):
        with app.app_context():
            try:
                counts = sweep()
                if counts:
                    logger.info("sweep: %s", ", ".join(f"{n} {outcome}" for outcome, n in counts.items()))
            except Exception:  # noqa: BLE001 (Stripe or the database may be down; the next sweep tries again)
                logger.exception("sweep failed; next attempt in %s s", every)
            finally:
                db.session.remove()


def run_mail_sender(app, stop_event, every):
    """Send due outbox messages every ``every`` seconds until ``stop_event`` is set; a failed round is logged.

    Each round claims its messages first (a conditional UPDATE per message), so the senders of all
    workers share the work and never send one message twice. A full batch goes round again at once.
    """
    while not stop_event.wait(every):
        while not stop_event.is_set():
            with app.app_context():
                try:
                    counts = send_due()
                    if counts:
                        logger.info("mail: %s", ", ".join(f"{n} {status}" for status, n in counts.items()))
                except Exception:  # noqa: BLE001 (the database may be down; the next round tries again)
                    logger.exception("mail sending failed; next attempt in %s s", every)
                    counts = {}
                finally:
                    db.session.remove()
            if sum(counts.values()) < BATCH:
                break


def start_for_dev_server(app):
    """Start the threads when ``flask run`` is serving this process; elsewhere do nothing.

    ``flask run`` imports the app inside its ``run`` command. With the reloader on, it does
    so twice: in the watching parent (which serves nothing) and in the serving child, where
    ``WERKZEUG_RUN_MAIN`` is set. Every other ``flask`` command, gunicorn and the tests
    import the app outside a ``run`` command and get no threads from here.
    """
    ctx = click.get_current_context(silent=True)
    if ctx is None or ctx.command is not run_command:
        return
    reload = ctx.params.get("reload")
    if reload is None:  # flask run's own default: reload in debug mode
        reload = get_debug_flag()
    if not reload or is_running_from_reloader():
        start(app)
