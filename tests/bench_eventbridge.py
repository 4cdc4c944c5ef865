"""How long from ``put_events`` to a paid order, through the running poller thread; prints the figures.

    python -m tests.bench_eventbridge [N]      (from the repository root; N defaults to 25)

Everything runs on loopback: moto's server for EventBridge and SQS (set up by aws-setup),
the local Stripe server, and its own MariaDB database (``BENCH_DATABASE_URL``, by default a
new one on the test server named after TEST_DATABASE_URL's and dropped afterwards). The poller
runs as the server runs it, with the production long poll of 20 s. Not a test: nothing is asserted.
"""
import logging
import os
import statistics
import sys
import time

from flask_migrate import upgrade
from moto.server import ThreadedMotoServer

from shop import create_app
from shop.extensions import db
from shop.models import TicketOrder
from shop.ops import background
from shop.ops.aws_setup import provision
from tests.support.apps import STRIPE_KEY, TestDatabases, shop_environment
from tests.support.aws import Aws
from tests.support.factories import Factories, OrderPlacer
from tests.support.stripe_server import FakeStripe


def put_to_paid_seconds(place_order, aws, stripe, ticket):
    """One payment: place an order, let Stripe complete it, put the event on the bus, time until it is paid."""
    order = place_order(ticket, quantity=1)
    event = stripe.complete(order.checkout_ref)
    started = time.perf_counter()
    aws.put_stripe_event(event, bus="stripe-bus")
    while True:
        db.session.rollback()  # a fresh snapshot each look
        if db.session.get(TicketOrder, order.id, populate_existing=True).status == "paid":
            return time.perf_counter() - started
        if time.perf_counter() - started > 30:
            raise SystemExit(f"order {order.id} was not paid within 30 s")
        time.sleep(0.002)


def main(n):
    logging.basicConfig(level=logging.WARNING)
    databases = TestDatabases()
    if os.environ.get("BENCH_DATABASE_URL"):
        database_url = databases.recreate(os.environ["BENCH_DATABASE_URL"])
    else:
        database_url = databases.create("bench")
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    host, port = moto.get_host_and_port()
    aws = Aws(f"http://{host}:{port}")
    os.environ.update(aws.environment)
    aws.connect()
    stripe = FakeStripe(api_key=STRIPE_KEY).start()
    aws.events.create_event_bus(Name="stripe-bus")
    os.environ.update(shop_environment(database_url=database_url, stripe_url=stripe.url, SHOP_SQS_WAIT_SECONDS="20"))
    with create_app().app_context():
        upgrade()
        os.environ["SQS_QUEUE_URL"] = provision(lambda line: None, event_bus="stripe-bus")
    app = create_app()  # the server's app, now with the queue configured
    background.start(app)
    try:
        with app.app_context():
            ticket = Factories().ticket(capacity=n + 10)
            place_order = OrderPlacer(app)
            put_to_paid_seconds(place_order, aws, stripe, ticket)  # warm-up: first connections, imports
            times = sorted(put_to_paid_seconds(place_order, aws, stripe, ticket) for _ in range(n))
            db.session.remove()
            db.engine.dispose()
    finally:
        background.stop()
        stripe.stop()
        moto.stop()
        databases.drop_all()
    ms = [t * 1000 for t in times]
    print(f"put_events → order paid, N={n}: median {statistics.median(ms):.0f} ms, "
          f"p90 {ms[int(0.9 * (n - 1))]:.0f} ms, worst {ms[-1]:.0f} ms, best {ms[0]:.0f} ms")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 25)
