"""Benchmark of an on-sale rush: ``python -m tests.bench_rush`` prints the figures.

It runs the shop under gunicorn with the repository's gunicorn.conf.py on a fresh MariaDB
database, the local Stripe-compatible server standing in for Stripe, and measures from
other processes (wrk, and a burst of Python threads) in one run:
  1. baseline: wrk on GET /healthz (one SELECT 1) and GET /events/<id> (the event page);
  2. sustained checkouts: wrk POSTing JSON checkouts to a ticket type that cannot sell out;
  3. the rush: BUYERS concurrent checkouts for CAPACITY seats, released at once.
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


def wrk(url, seconds, connections, script=None):
    """Run wrk from its own process; returns requests/s, p50 and p99 in ms, and non-2xx/3xx count."""
    command = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", url]
    if script:
        command[1:1] = ["-s", script]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rate, "p50": _ms(out, "50%"), "p99": _ms(out, "99%"), "non_2xx": int(bad.group(1)) if bad else 0}


def _ms(out, label):
    value, unit = re.search(rf"{label}\s+([\d.]+)(us|ms|s)", out).groups()
    return float(value) * {"us": 0.001, "ms": 1, "s": 1000}[unit]


def rush(url, buyers):
    """``buyers`` threads POST one checkout each, released together.

    Returns (statuses, their latencies in ms, seconds)."""
    barrier = threading.Barrier(buyers + 1)
    results = []

    def buy(i):
        body = json.dumps({"quantity": 1, "email": f"fan{i}@example.com"}).encode()
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
    """Fill the catalogue, serve the shop under gunicorn with ``env`` and measure; 0 when the rush went right."""
    app = app_from_environment(env)
    build_schema(app)
    runner = app.test_cli_runner()
    runner.invoke(args=["shop", "create-event", "--title", "Bench", "--venue", "Hall",
                        "--starts-at", "2099-01-01T20:00", "--publish"])
    runner.invoke(args=["shop", "add-ticket", "1", "--name", "Unlimited", "--price", "10.00", "--capacity", "1000000"])
    runner.invoke(args=["shop", "add-ticket", "1", "--name", "Rush", "--price", "10.00",
                        "--capacity", str(args.capacity)])

    with gunicorn_server(env, workers=args.workers) as served:
        base = served.url
        with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
            script.write(WRK_CHECKOUT)
        wrk(f"{base}/events/1", 2, 10)  # warm-up: workers connect to the database
        rows = [
            ("baseline GET /healthz", wrk(f"{base}/healthz", args.seconds, args.connections)),
            ("GET /events/1 (event page)", wrk(f"{base}/events/1", args.seconds, args.connections)),
            ("POST checkout (sustained)",
             wrk(f"{base}/events/1/tickets/1/checkout", args.seconds, args.connections, script.name)),
        ]
        os.unlink(script.name)
        with ProcessPoolExecutor(1) as client:
            statuses, latencies, seconds = client.submit(
                rush, f"{base}/events/1/tickets/2/checkout", args.buyers).result()
        with open(served.log_path) as log:
            retries = sum("lock conflict" in line for line in log)

    print(f"{'what':32} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8}")
    for name, r in rows:
        print(f"{name:32} {r['rps']:9.1f} {r['p50']:8.1f} {r['p99']:8.1f} {r['non_2xx']:8d}")
    held = statuses.count(201)
    to_redirect = sorted(ms for s, ms in zip(statuses, latencies, strict=True) if s == 201)
    print(f"\nrush: {args.buyers} buyers at once for {args.capacity} seats: {held} held, "
          f"{statuses.count(409)} told sold out, "
          f"{sum(1 for s in statuses if s >= 500)} 5xx, in {seconds:.2f} s = {args.buyers / seconds:.0f} checkouts/s")
    print(f"  to the checkout redirect: p50 {statistics.median(to_redirect):.0f} ms, "
          f"p99 {percentile(to_redirect, 99):.0f} ms; "
          f"to any answer: p50 {statistics.median(latencies):.0f} ms, p99 {percentile(sorted(latencies), 99):.0f} ms")
    print(f"lock retries (deadlock or lock-wait timeout, retried): {retries}")
    release_connections(app)
    return 0 if held == args.capacity and not any(s >= 500 for s in statuses) else 1


if __name__ == "__main__":
    sys.exit(main())
