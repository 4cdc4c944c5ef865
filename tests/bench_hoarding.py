"""How many seats one anonymous client can hold: ``python -m tests.bench_hoarding`` prints the figures.

The attack from the security review: one client, no cookies, a new email per request, JSON checkouts of
10 seats each against an event of 2,000 seats, as fast as it can. The shop runs under gunicorn with the
repository's gunicorn.conf.py; the client runs in this process. Two runs on fresh databases:
  1. with the pending caps and rate limits switched off (the shop as it was before them);
  2. with the defaults (SHOP_MAX_PENDING_PER_IP, SHOP_MAX_PENDING_PER_BUYER, SHOP_LIMIT_CHECKOUT).
It also checks that a second buyer behind another address still buys during the attack.
"""
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from tests.support.apps import STRIPE_KEY, TestDatabases, app_from_environment, build_schema, shop_environment
from tests.support.gunicorn_server import gunicorn_server

REQUESTS, SEATS_EACH, CAPACITY = 200, 10, 2000


def post(url, body, forwarded_for=None):
    headers = {"Content-Type": "application/json"}
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def attack(base):
    url = f"{base}/events/1/tickets/1/checkout"
    started = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda i: post(url, {"quantity": SEATS_EACH, "email": f"h{i}@example.net"}),
                                 range(REQUESTS)))
    return statuses, time.perf_counter() - started


def run(env, label):
    app = app_from_environment(env)
    build_schema(app)
    runner = app.test_cli_runner()
    runner.invoke(args=["shop", "create-event", "--title", "Big", "--venue", "Arena",
                        "--starts-at", "2099-01-01T20:00"])
    runner.invoke(args=["shop", "add-ticket", "1", "--name", "Floor", "--price", "20.00", "--capacity", str(CAPACITY)])
    with gunicorn_server(env, workers=None) as served:
        statuses, seconds = attack(served.url)
    held = statuses.count(201) * SEATS_EACH
    refused = {code: statuses.count(code) for code in sorted(set(statuses)) if code != 201}
    print(f"{label:44} {held:5d} of {CAPACITY} seats held by one client in {seconds:.1f} s; "
          f"{statuses.count(201)} holds, refused: {refused}")


def main():
    off = {"SHOP_MAX_PENDING_PER_IP": "0", "SHOP_MAX_PENDING_PER_BUYER": "0", "RATELIMIT_ENABLED": "false"}
    defaults = {"SHOP_MAX_PENDING_PER_IP": "", "SHOP_MAX_PENDING_PER_BUYER": "", "RATELIMIT_ENABLED": "true"}
    for purpose, settings, label in [("hoard_off", off, "caps and rate limits off (as before)"),
                                     ("hoard_on", defaults, "defaults (caps per address and buyer, limits)")]:
        # A Stripe stand-in per run: order ids start again at 1, and so do the checkouts' idempotency keys.
        stripe_process = subprocess.Popen([sys.executable, "-m", "tests.support.stripe_server", STRIPE_KEY, "0"],
                                          stdout=subprocess.PIPE, text=True)
        databases = TestDatabases()
        try:
            stripe_url = stripe_process.stdout.readline().strip()
            run(shop_environment(database_url=databases.create(purpose), stripe_url=stripe_url, **settings), label)
        finally:
            stripe_process.terminate()
            databases.drop_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
