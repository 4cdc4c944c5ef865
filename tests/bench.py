"""The shop's benchmark: ``python -m tests.bench`` prints one table, each row beside its floor and goal.

Everything runs on loopback in one run, on a fresh MariaDB database (on TEST_DATABASE_URL's server):
the shop under gunicorn with the repository's gunicorn.conf.py, the floor app (tests/support/floor_app.py)
under the same worker settings, the Stripe stand-in in this process (its latency set per row), and moto's
server in a process of its own. Load comes from other processes: wrk, and Python clients in a process pool.

Rows:
  * the event page against a bare Flask + SQLAlchemy + Jinja page of the same event (wrk), served under the
    shop's gunicorn settings and under sync workers: the ratio is to the faster of the two;
  * sustained checkouts with a local Stripe, then with ``--stripe-latency`` added to each Stripe call;
  * the rush: ``--buyers`` checkouts at once for ``--capacity`` seats, with that latency;
  * webhook ingest: distinct signed ``checkout.session.completed`` events, each paying an order;
  * SQS drain: the shop's pollers paying orders from the queue, against a raw boto3 receive + delete loop;
  * the largest worker's resident memory after all of it, against the floor's.
Needs wrk (Debian package ``wrk``). Not a test: it prints figures and exits 1 only when a rush sold wrong.
"""
import argparse
import contextlib
import functools
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from urllib.parse import urlsplit

import boto3
from sqlalchemy import func, select

from shop.extensions import db
from shop.models import PaymentEvent, TicketOrder
from tests.bench_rush import WRK_CHECKOUT, fill_catalogue, percentile, rush, wrk
from tests.support.apps import (
    STRIPE_KEY,
    WEBHOOK_SECRET,
    TestDatabases,
    app_from_environment,
    build_schema,
    release_connections,
    shop_environment,
)
from tests.support.aws import REGION, Aws
from tests.support.gunicorn_server import ROOT, free_port, gunicorn_server, gunicorn_settings
from tests.support.stripe_server import FakeStripe

UNLIMITED_TYPE, RUSH_TYPE = 1, 2  # bench_rush's catalogue: type 1 never sells out, type 2 holds --capacity


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10, help="length of each wrk run")
    parser.add_argument("--stripe-latency", type=float, default=0.25, help="seconds added to each Stripe call")
    parser.add_argument("--buyers", type=int, default=500)
    parser.add_argument("--capacity", type=int, default=200)
    parser.add_argument("--events", type=int, default=2000, help="webhook events to ingest")
    parser.add_argument("--messages", type=int, default=1000, help="SQS messages to drain, each way")
    args = parser.parse_args()

    load_before = os.getloadavg()
    stripe = FakeStripe(api_key=STRIPE_KEY).start()
    moto, moto_url = _moto()
    databases = TestDatabases()
    try:
        env = shop_environment(database_url=databases.create("bench"), stripe_url=stripe.url)
        rows, rush_ok = measure(args, env, stripe, Aws(moto_url))
    finally:
        moto.terminate()
        stripe.stop()
        databases.drop_all()
    print_table(rows, load_before, os.getloadavg())
    return 0 if rush_ok else 1


def measure(args, env, stripe, aws):
    """Run every row; returns (rows, whether the rush sold exactly the capacity without a 5xx)."""
    app = app_from_environment(env)
    build_schema(app)
    fill_catalogue(app.test_cli_runner(), args.capacity)
    rows = Table()
    with gunicorn_server(env, workers=None) as shop, floor_server(env) as floor, \
            floor_server(env, worker_class="sync") as sync_floor:
        floors = {f"floor ({_gunicorn_settings()['worker_class']})": floor, "floor (sync)": sync_floor}
        rows.add(event_page(shop.url, floors, args.seconds))
        local = sustained_checkouts(shop.url, args.seconds)
        rows.add(("checkout, local Stripe (orders/s)", local["rps"], None, "-", _wrk_note(local)))
        stripe.latency = args.stripe_latency
        slow = sustained_checkouts(shop.url, args.seconds, connections=256)
        rows.add((f"checkout, Stripe +{args.stripe_latency * 1000:.0f} ms (orders/s)", slow["rps"], local["rps"],
                  "≥ 200/s", _wrk_note(slow)))
        rush_row, rush_ok = the_rush(shop.url, args)
        rows.add(rush_row)
        stripe.latency = 0.0
        with app.app_context():
            refs = _pending_refs(shop.url, args.events + args.messages)
        rows.add(webhook_ingest(shop.url, stripe, refs[:args.events]))
        rows.add(("worker RSS (MB, largest)", _largest_worker_mb(shop.url), _largest_worker_mb(floor),
                  "< 150 MB", ""))
        with open(shop.log_path) as log:
            conflicts = sum("lock conflict" in line for line in log)
    rows.add(sqs_drain(env, app, stripe, aws, refs[args.events:]))
    rows.notes.append(f"holds retried after a lock conflict (deadlock or lock-wait timeout): {conflicts}")
    release_connections(app)
    return rows, rush_ok


# ----- the rows -----

def event_page(shop_url, floors, seconds):
    """wrk on the shop's page and each floor's, alternated twice so a passing disturbance hits all alike.

    Returns the row of the shop's mean against the best floor's."""
    urls = {"shop": shop_url, **floors}
    for url in urls.values():
        wrk(f"{url}/events/1", 2, 8)  # warm-up: workers connect, templates compile
    rates = {name: [] for name in urls}
    for _ in range(2):
        for name, url in urls.items():
            rates[name].append(wrk(f"{url}/events/1", seconds // 2, 32)["rps"])
    means = {name: statistics.mean(values) for name, values in rates.items()}
    best = max(floors, key=means.get)
    note = "best floor: " + best + "; " + ", ".join(f"{name} {means[name]:.0f}" for name in floors)
    return ("event page (req/s, wrk -c32)", means["shop"], means[best], "≥ 0.9 × floor", note)


def sustained_checkouts(shop_url, seconds, connections=64):
    """wrk POSTing one-ticket JSON checkouts of a type that never sells out; each makes a Stripe session."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_CHECKOUT)
    try:
        return wrk(f"{shop_url}/events/1/tickets/{UNLIMITED_TYPE}/checkout", seconds, connections, script.name)
    finally:
        os.unlink(script.name)


def _wrk_note(result):
    return f"p50 {result['p50']:.0f} ms, p99 {result['p99']:.0f} ms, {result['non_2xx']} non-2xx"


def the_rush(shop_url, args):
    """``--buyers`` threads in a process of their own, released at once on ``--capacity`` seats."""
    with ProcessPoolExecutor(1) as client:
        statuses, latencies, seconds = client.submit(
            rush, f"{shop_url}/events/1/tickets/{RUSH_TYPE}/checkout", args.buyers).result()
    held, errors = statuses.count(201), sum(1 for s in statuses if s >= 500)
    others = len(statuses) - held - statuses.count(409) - errors
    to_redirect = sorted(ms for s, ms in zip(statuses, latencies, strict=True) if s == 201)
    p99 = percentile(to_redirect, 99) if to_redirect else float("nan")
    note = (f"{held} sold of {args.capacity}, {errors} 5xx, {others} other; p50 {statistics.median(to_redirect):.0f} "
            f"ms; all {args.buyers} answered in {seconds:.2f} s" if to_redirect else "nothing sold")
    row = (f"rush: {args.buyers} buyers, {args.capacity} seats (p99 ms to redirect)", p99, None, "< 1500 ms", note)
    return row, held == args.capacity and errors == 0 and others == 0


def webhook_ingest(shop_url, stripe, refs):
    """Each order's checkout is completed at the stand-in, and its event posted, signed, to the webhook."""
    events = []
    for ref in refs:
        payload = json.dumps(stripe.complete(ref))
        events.append((payload, stripe.sign(payload, WEBHOOK_SECRET)))
    with ProcessPoolExecutor(1) as client:
        statuses, seconds = client.submit(post_events, f"{shop_url}/webhooks/stripe", events).result()
    bad = len(statuses) - statuses.count(200)
    return ("webhook ingest (events/s, each pays an order)", len(events) / seconds, None, "≥ 300/s",
            f"{len(events)} events, {bad} not 200")


def post_events(url, events, threads=32):
    """POST the (payload, signature) pairs from ``threads`` keep-alive connections; (statuses, seconds)."""
    target = urlsplit(url)
    pending, statuses, lock = list(events), [], threading.Lock()

    def worker():
        connection = http.client.HTTPConnection(target.hostname, target.port, timeout=60)
        while True:
            with lock:
                if not pending:
                    break
                payload, signature = pending.pop()
            connection.request("POST", target.path, body=payload, headers={
                "Content-Type": "application/json", "Stripe-Signature": signature})
            response = connection.getresponse()
            response.read()
            with lock:
                statuses.append(response.status)
        connection.close()

    started = time.perf_counter()
    workers = [threading.Thread(target=worker) for _ in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    return statuses, time.perf_counter() - started


def sqs_drain(env, app, stripe, aws, refs):
    """The same number of messages drained twice from one queue: by a raw boto3 loop, then by the shop.

    The raw loop receives ten at a time and deletes each batch at once. The shop runs under gunicorn
    with its pollers on; its drain is timed from the first message sent to the last order paid.
    """
    sqs = boto3.client("sqs", region_name=REGION, endpoint_url=aws.endpoint_url, aws_access_key_id="bench",
                       aws_secret_access_key="bench")
    queue = sqs.create_queue(QueueName="bench-events", Attributes={"VisibilityTimeout": "60"})["QueueUrl"]
    bodies = [aws.envelope(stripe.complete(ref)) for ref in refs]
    _send_all(sqs, queue, bodies)
    raw_rate = len(bodies) / _raw_drain(sqs, queue, len(bodies))
    poller_env = {**env, **aws.environment, "SQS_QUEUE_URL": queue, "SHOP_SQS_POLLER": "on",
                  "SHOP_SQS_WAIT_SECONDS": "1"}
    with gunicorn_server(poller_env, workers=None, sqs_poller=True):
        time.sleep(2)  # every worker's poller is in its long poll
        started = time.perf_counter()
        _send_all(sqs, queue, bodies)
        with app.app_context():
            while _paid_by_queue() < len(bodies):
                if time.perf_counter() - started > 300:
                    raise SystemExit("the pollers did not drain the queue within 300 s")
                time.sleep(0.05)
        seconds = time.perf_counter() - started
    shop_rate = len(bodies) / seconds
    return ("SQS drain (messages/s, each pays an order)", shop_rate, raw_rate, "≥ 0.8 × floor",
            f"{len(bodies)} messages; floor: one raw receive+delete loop")


def _send_all(sqs, queue, bodies):
    for start in range(0, len(bodies), 10):
        entries = [{"Id": str(i), "MessageBody": body} for i, body in enumerate(bodies[start:start + 10])]
        assert not sqs.send_message_batch(QueueUrl=queue, Entries=entries).get("Failed")


def _raw_drain(sqs, queue, count):
    """Receive and delete until ``count`` messages are gone; seconds taken."""
    started, done = time.perf_counter(), 0
    while done < count:
        messages = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
        if messages:
            sqs.delete_message_batch(QueueUrl=queue, Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)])
            done += len(messages)
    return time.perf_counter() - started


def _paid_by_queue():
    db.session.rollback()  # a fresh snapshot each look
    return db.session.execute(select(func.count()).select_from(PaymentEvent).where(
        PaymentEvent.delivered_by == "eventbridge", PaymentEvent.processed_at.is_not(None))).scalar_one()


def _pending_refs(shop_url, count):
    """Checkout references of ``count`` pending orders of the unlimited type (the rush's are left alone),
    placing more with a local Stripe while the sustained rows left too few."""
    while True:
        db.session.rollback()
        refs = db.session.execute(select(TicketOrder.checkout_ref).where(
            TicketOrder.status == "pending", TicketOrder.ticket_id == UNLIMITED_TYPE,
            TicketOrder.checkout_ref.is_not(None)).limit(count)).scalars().all()
        if len(refs) == count:
            db.session.remove()
            return refs
        sustained_checkouts(shop_url, 4)


# ----- servers and processes -----

@contextlib.contextmanager
def floor_server(env, worker_class=None):
    """The floor app under gunicorn with the worker settings gunicorn.conf.py gives the shop, or with
    ``worker_class`` instead (sync: as many workers as the shop's gthread setting would have, 2 × cores)."""
    settings = _gunicorn_settings()
    workers = settings["workers"] if worker_class is None else 2 * os.cpu_count()
    port = free_port()
    # -c /dev/null: not the shop's gunicorn.conf.py, which gunicorn would read from the working directory.
    command = [sys.executable, "-m", "gunicorn", "-c", "/dev/null", "--bind", f"127.0.0.1:{port}",
               "--workers", str(workers), "--worker-class", worker_class or settings["worker_class"],
               "--threads", str(settings["threads"] if worker_class is None else 1), "tests.support.floor_app:app"]
    log = tempfile.TemporaryFile()
    process = subprocess.Popen(command, cwd=ROOT, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_for(url + "/events/1", process)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


@functools.cache
def _gunicorn_settings():
    """Read once per run: each read starts a Python process that imports the shop."""
    return gunicorn_settings("workers", "worker_class", "threads")


def _wait_for(url, process, timeout=30):
    deadline = time.monotonic() + timeout
    while True:
        try:
            with contextlib.closing(http.client.HTTPConnection(urlsplit(url).hostname, urlsplit(url).port, timeout=2)) \
                    as connection:
                connection.request("GET", urlsplit(url).path)
                if connection.getresponse().status == 200:
                    return
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"{url} did not answer")
        time.sleep(0.2)


def _moto():
    """moto's server in a process of its own (so this process's threads never slow SQS down); (process, URL)."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            with contextlib.closing(http.client.HTTPConnection("127.0.0.1", port, timeout=2)) as connection:
                connection.request("GET", "/moto-api/")
                connection.getresponse().read()
                return process, url
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit("moto's server did not start") from None
            time.sleep(0.2)


def _largest_worker_mb(url):
    """The largest resident set of the gunicorn workers serving ``url`` (found by the port on their command line)."""
    port = f"127.0.0.1:{urlsplit(url).port}"
    masters = [pid for pid, cmd in _processes() if "gunicorn" in cmd and port in cmd]
    sizes = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/status") as f:
                status = dict(line.split(":", 1) for line in f if ":" in line)
        except OSError:
            continue
        if int(status.get("PPid", "0").strip()) in masters:
            sizes.append(int(status["VmRSS"].split()[0]) / 1024)
    return max(sizes)


def _processes():
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                yield int(pid), f.read().replace(b"\0", b" ").decode()
        except OSError:
            continue


class Table(list):
    """The rows (name, shop, floor or None, goal, note); each is shown on stderr as it is measured.
    ``notes``: lines printed under the table."""

    def __init__(self):
        super().__init__()
        self.notes = []

    def add(self, row):
        self.append(row)
        print(self.line(*row), file=sys.stderr, flush=True)

    @staticmethod
    def line(name, value, floor, goal, note):
        ratio = f"{value / floor:6.2f}" if floor else f"{'':6}"
        floor_text = f"{floor:9.1f}" if floor else f"{'':9}"
        return f"{name:52} {value:9.1f} {floor_text} {ratio}  {goal:14} {note}"


def print_table(rows, load_before, load_after):
    settings = _gunicorn_settings()
    print(f"\ngunicorn: {settings['workers']} workers, {settings['worker_class']}"
          + (f", {settings['threads']} threads" if settings["worker_class"] == "gthread" else "")
          + f"; {os.cpu_count()} cores; load average before {_load(load_before)}, after {_load(load_after)}")
    print(f"{'what':52} {'shop':>9} {'floor':>9} {'ratio':>6}  {'goal':14} notes")
    for row in rows:
        print(Table.line(*row))
    for note in rows.notes:
        print(note)


def _load(values):
    return " ".join(f"{v:.2f}" for v in values)


if __name__ == "__main__":
    sys.exit(main())
