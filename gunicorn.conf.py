"""gunicorn's settings for the shop; gunicorn reads this file from the working directory: ``gunicorn wsgi:app``.

Each worker runs the SQS poller (when ``SQS_QUEUE_URL`` is set), the sweeper and the mail
sender as background threads, started by the hooks below once the worker has loaded the app.
"""
import multiprocessing
import os
import signal
import sys

# gevent: a greenlet per request, so a worker keeps every checkout's wait on Stripe's API in flight (up to
# worker_connections), where gthread kept GUNICORN_THREADS per worker; the database stays blocking, on
# purpose (shop/ops/greenlets.py). Same code, 2 cores, Stripe + 250 ms a call, wrk -c200: gthread with 32
# threads 78 checkouts/s and the event page 301 req/s; gevent 96/s and 361; gevent with blocking database
# sockets 112/s and 384. GUNICORN_WORKER_CLASS=gthread (with GUNICORN_THREADS) remains the fallback.
worker_class = os.environ.get("GUNICORN_WORKER_CLASS") or "gevent"
if worker_class == "gevent":
    # Before the shop is imported below (gunicorn's own patching, in each worker, would come after it):
    # sockets, ssl and threads must be gevent's in every module. So only gunicorn may load this file.
    from gevent import monkey
    monkey.patch_all()

from shop.config import ConfigError, load_config  # noqa: E402 (after the patching above)
from shop.ops import background  # noqa: E402

bind = f"0.0.0.0:{os.environ.get('PORT', '8000')}"
# Each worker binds the port itself (SO_REUSEPORT): a restarted master serves at once even while
# orphaned workers of the previous one still hold the port.
reuse_port = True
# A gevent worker keeps a core busy on its own, so one per core (measured on 2 cores, Stripe + 250 ms: 4 workers
# 98 checkouts/s, 3 109/s, 2 117/s); a gthread worker spends part of its time waiting on its GIL, so two.
workers = int(os.environ.get("WEB_CONCURRENCY")
              or (1 if worker_class == "gevent" else 2) * multiprocessing.cpu_count())
worker_connections = int(os.environ.get("GUNICORN_WORKER_CONNECTIONS") or 1000)
threads = int(os.environ.get("GUNICORN_THREADS") or 8)

# A stopping worker first finishes the poller's long poll (up to 20 s, SHOP_SQS_WAIT_SECONDS)
# and the batch in hand; gunicorn kills workers still running after graceful_timeout.
graceful_timeout = 30


def on_starting(server):
    """In the master, before it binds or forks: a bad setting stops gunicorn here, with one line and status 1."""
    try:
        # The instance folder create_app uses (next to the shop package), for the embedded default's key.
        load_config(instance_path=os.path.join(os.path.dirname(os.path.abspath(__file__)), "instance"))
    except ConfigError as exc:
        sys.exit(f"shop: configuration error: {exc}")


def post_worker_init(worker):
    """In the worker, after the app is loaded: never in the master, so ``--preload`` forks no threads."""
    background.start(worker.wsgi)
    # gunicorn has no hook for SIGTERM, its graceful stop: chain one, so the poller takes no new
    # messages while the worker finishes its requests.
    graceful_exit = worker.handle_exit

    def stop_background_then_exit(signum, frame):
        background.request_stop()
        graceful_exit(signum, frame)

    signal.signal(signal.SIGTERM, stop_background_then_exit)


def worker_int(worker):
    """SIGINT/SIGQUIT (quick shutdown): ask the threads to stop; ``worker_exit`` then waits for them."""
    background.request_stop()


def worker_exit(server, worker):
    """The worker is leaving: stop the threads within the graceful timeout, leaving a margin for the exit."""
    background.stop(timeout=graceful_timeout - 5)
