"""Benchmark of an on-sale rush: ``python -m tests.bench_rush`` prints the figures.

It runs the shop under gunicorn with the repository's gunicorn.conf.py on a fresh MariaDB
database, the local Stripe-compatible server standing in for Stripe, and measures from
other processes (wrk, and a burst of Python threads) in one run:
  1. baseline: wrk on GET /healthz (one SELECT 1) and GET /events/<id> (the event page);
  2. sustained checkouts: wrk POSTing JSON checkouts to a ticket type that cannot sell out;
  3. the rush: BUYERS concurrent checkouts for CAPACITY seats, released at once;
and the same for mixed orders (``--mode``): one order of two ticket types (1 + 1) through
POST /events/<id>/checkout, sustained on two unlimited types, and a rush on two types sharing
a quota of 2 × CAPACITY seats (so CAPACITY orders fit), next to the single-type figures.
Needs wrk (Debian package ``wrk``) and MariaDB at TEST_DATABASE_URL's server.
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ProcessPoolExecutor

from tests.support.apps import (
    STRIPE_KEY,
    TestDatabases,
    app_from_environment,
    build_schema,
    release_connections,
    shop_environment,
)
from tests.support.gunicorn_server import gunicorn_server

WRK_CHECKOUT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local n = 0
request = function()
  n = n + 1
  return wrk.format(nil, nil, nil, '{"quantity": 1, "email": "load' .. n .. '@example.com"}')
end
"""

WRK_MIXED_CHECKOUT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local n = 0
request = function()
  n = n + 1
  return wrk.format(nil, nil, nil, '{"items": [{"ticket_id": 1, "quantity": 1}, {"ticket_id": 3, "quantity": 1}], '
    .. '"email": "mixed' .. n .. '@example.com"}')
end
"""
MIXED_RUSH_ITEMS = [{"ticket_id": 4, "quantity": 1}, {"ticket_id": 5, "quantity": 1}]


def wrk(url, seconds, connections, script=None):
    """Run wrk from its own process; returns requests/s, p50 and p99 in ms, and non-2xx/3xx count."""
    # A long timeout: wrk's own 2 s would drop the slowest answers from the figures instead of counting them.
    command = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--timeout", "30s", "--latency", url]
    if script:
        command[1:1] = ["-s", script]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rate, "p50": _ms(out, "50%"), "p99": _ms(out, "99%"), "non_2xx": int(bad.group(1)) if bad else 0}


def _ms(out, label):
    value, unit = re.search(rf"{label}\s+([\d.]+)(us|ms|s)", out).groups()
    return float(value) * {"us": 0.001, "ms": 1, "s": 1000}[unit]


def rush(url, buyers, items=None):
    """``buyers`` threads POST one checkout each (one ticket, or the order's ``items``), released together.

    Returns (statuses, their latencies in ms, seconds)."""
    barrier = threading.Barrier(buyers + 1)
    results = []

    def buy(i):
        order = {"items": items} if items else {"quantity": 1}
        body = json.dumps({**order, "email": f"fan{i}@example.com"}).encode()
        request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
        barrier.wait()
        started = time.perf_counter()
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                status = response.status
        except urllib.error.HTTPError as error:
            status = error.code
        results.append((status, (time.perf_counter() - started) * 1000))

    threads = [threading.Thread(target=buy, args=(i,)) for i in range(buyers)]
    for t in threads:
        t.start()
    barrier.wait()
    started = time.perf_counter()
    for t in threads:
        t.join()
    return [s for s, _ in results], [ms for _, ms in results], time.perf_counter() - started


def percentile(sorted_values, p):
    return sorted_values[min(len(sorted_values) - 1, int(round(p / 100 * (len(sorted_values) - 1))))]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=None, help="gunicorn workers (default: gunicorn.conf.py's)")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--buyers", type=int, default=200)
    parser.add_argument("--capacity", type=int, default=50)
    parser.add_argument("--stripe-latency", type=float, default=0.0, help="seconds each Stripe call takes")
    parser.add_argument("--mode", choices=("single", "mixed", "both"), default="both",
                        help="single-type orders, mixed orders (two types in one order), or both side by side")
    args = parser.parse_args()

    # The Stripe stand-in and the rush's client threads each get a process of their own, so
    # neither competes with the other for one interpreter's lock.
    stripe_process = subprocess.Popen(
        [sys.executable, "-m", "tests.support.stripe_server", STRIPE_KEY, str(args.stripe_latency)],
        stdout=subprocess.PIPE, text=True)
    stripe_url = stripe_process.stdout.readline().strip()
    databases = TestDatabases()
    try:
        return run(args, shop_environment(database_url=databases.create("bench"), stripe_url=stripe_url))
    finally:
        stripe_process.terminate()
        databases.drop_all()


def run(args, env):
    """Fill the catalogue, serve the shop under gunicorn with ``env`` and measure; 0 when the rushes went right."""
    app = app_from_environment(env)
    build_schema(app)
    fill_catalogue(app.test_cli_runner(), args.capacity)
    modes = ("single", "mixed") if args.mode == "both" else (args.mode,)

    with gunicorn_server(env, workers=args.workers) as served:
        base = served.url
        wrk(f"{base}/events/1", 2, 10)  # warm-up: workers connect to the database
        rows = [("baseline GET /healthz", wrk(f"{base}/healthz", args.seconds, args.connections)),
                ("GET /events/1 (event page)", wrk(f"{base}/events/1", args.seconds, args.connections))]
        rushes = {}
        for mode in modes:
            rows.append(_sustained(base, mode, args))
            with ProcessPoolExecutor(1) as client:
                url, items = ((f"{base}/events/1/tickets/2/checkout", None) if mode == "single"
                              else (f"{base}/events/1/checkout", MIXED_RUSH_ITEMS))
                rushes[mode] = client.submit(rush, url, args.buyers, items).result()
        with open(served.log_path) as log:
            retries = sum("lock conflict" in line for line in log)

    print(f"{'what':36} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8}")
    for name, r in rows:
        print(f"{name:36} {r['rps']:9.1f} {r['p50']:8.1f} {r['p99']:8.1f} {r['non_2xx']:8d}")
    ok = all([_report_rush(mode, *rushes[mode], args) for mode in modes])  # a list: every rush is reported
    print(f"lock retries (deadlock or lock-wait timeout, retried): {retries}")
    release_connections(app)
    return 0 if ok else 1


def fill_catalogue(runner, capacity):
    """Event 1: types 1 and 3 never sell out (sustained load), 2 is the single-type rush, 4 and 5 share a quota."""
    unlimited = 1_000_000  # the largest capacity a ticket type may have
    commands = [["create-event", "--title", "Bench", "--venue", "Hall", "--starts-at", "2099-01-01T20:00"]]
    commands += [["add-ticket", "1", "--name", name, "--price", "10.00", "--capacity", str(seats)]
                 for name, seats in (("Unlimited", unlimited), ("Rush", capacity), ("Unlimited B", unlimited),
                                     ("Floor A", unlimited), ("Floor B", unlimited))]
    commands += [["add-quota", "1", "--name", "floor", "--capacity", str(2 * capacity), "--ticket", "4",
                  "--ticket", "5"],
                 # New events are drafts (nothing is on sale, every page a 404) until published.
                 ["publish-event", "1"]]
    for command in commands:
        result = runner.invoke(args=["shop", *command])
        assert result.exit_code == 0, result.output


def _sustained(base, mode, args):
    """wrk POSTing checkouts that never sell out: one ticket per order, or one of each of two types."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_CHECKOUT if mode == "single" else WRK_MIXED_CHECKOUT)
    url = f"{base}/events/1/tickets/1/checkout" if mode == "single" else f"{base}/events/1/checkout"
    try:
        return f"POST checkout, {mode} (sustained)", wrk(url, args.seconds, args.connections, script.name)
    finally:
        os.unlink(script.name)


def _report_rush(mode, statuses, latencies, seconds, args):
    """Print one rush's figures; True when exactly CAPACITY orders were held and nothing failed with a 5xx."""
    held = statuses.count(201)
    to_redirect = sorted(ms for s, ms in zip(statuses, latencies, strict=True) if s == 201)
    what = "one ticket each" if mode == "single" else "2 types (1 + 1) each, a shared quota"
    print(f"\nrush, {mode}: {args.buyers} buyers at once, {what}, room for {args.capacity} orders: {held} held, "
          f"{statuses.count(409)} told sold out, "
          f"{sum(1 for s in statuses if s >= 500)} 5xx, in {seconds:.2f} s = {args.buyers / seconds:.0f} checkouts/s")
    others = sorted(Counter(s for s in statuses if s not in (201, 409)).items())
    if others:
        print(f"  other answers: {others}")
    if to_redirect:
        print(f"  to the checkout redirect: p50 {statistics.median(to_redirect):.0f} ms, "
              f"p99 {percentile(to_redirect, 99):.0f} ms; "
              f"to any answer: p50 {statistics.median(latencies):.0f} ms, "
              f"p99 {percentile(sorted(latencies), 99):.0f} ms")
    return held == args.capacity and not any(s >= 500 for s in statuses)


if __name__ == "__main__":
    sys.exit(main())
