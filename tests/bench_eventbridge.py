"""How long from ``put_events`` to a paid order, through the running poller thread; prints the figures.

    python -m tests.bench_eventbridge [N]      (from the repository root; N defaults to 25)

Everything runs on loopback: moto's server for EventBridge and SQS (set up by aws-setup),
the local Stripe server, and its own MariaDB database (``BENCH_DATABASE_URL``, default
``shop_bench`` on the test server). The poller runs as the server runs it, with the
production long poll of 20 s. Not a test: nothing is asserted.
"""
import logging
import os
import statistics
import sys
import time

from flask_migrate import upgrade
from moto.server import ThreadedMotoServer

from shop import create_app
from shop.delivery import background
from shop.extensions import db
from shop.models import TicketOrder
from shop.services.aws_setup import provision
from tests.support.apps import create_database, database_url
from tests.support.aws import Aws, aws_environment
from tests.conftest import shop_environment
from tests.support.factories import checkout, make_ticket
from tests.support.stripe_server import FakeStripe

DATABASE_URL = os.environ.get("BENCH_DATABASE_URL", database_url("shop_bench"))


def put_to_paid_seconds(app, aws, stripe, ticket):
    """One payment: place an order, let Stripe complete it, put the event on the bus, time until it is paid."""
    with app.test_request_context():
        order, _ = checkout(ticket, quantity=1)
    event = stripe.complete(order.stripe_checkout_session_id)
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
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    host, port = moto.get_host_and_port()
    os.environ.update(aws_environment(f"http://{host}:{port}"))
    stripe = FakeStripe(api_key="sk_test_shop").start()
    aws = Aws(f"http://{host}:{port}")
    aws.events.create_event_bus(Name="stripe-bus")
    create_database(DATABASE_URL)
    os.environ.update(shop_environment(stripe, database_url=DATABASE_URL, SHOP_SQS_WAIT_SECONDS="20"))
    with create_app().app_context():
        upgrade()
        os.environ["SQS_QUEUE_URL"] = provision(lambda line: None, event_bus="stripe-bus")
    app = create_app()  # the server's app, now with the queue configured
    background.start(app)
    try:
        with app.app_context():
            ticket = make_ticket(capacity=n + 10)
            put_to_paid_seconds(app, aws, stripe, ticket)  # warm-up: first connections, imports
            times = sorted(put_to_paid_seconds(app, aws, stripe, ticket) for _ in range(n))
    finally:
        background.stop()
        stripe.stop()
        moto.stop()
    ms = [t * 1000 for t in times]
    print(f"put_events → order paid, N={n}: median {statistics.median(ms):.0f} ms, "
          f"p90 {ms[int(0.9 * (n - 1))]:.0f} ms, worst {ms[-1]:.0f} ms, best {ms[0]:.0f} ms")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 25)
