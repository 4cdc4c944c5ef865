"""An on-sale rush against gunicorn with several workers: never oversold, never a 5xx, every payment counted."""
import json
import random
import threading
import urllib.error
import urllib.request

import pytest
from sqlalchemy import func, select

from shop.extensions import db
from shop.models import Quota, TicketOrder, TicketType
from shop.services.events import create_quota
from tests.support.apps import WEBHOOK_SECRET

pytestmark = pytest.mark.slow

CAPACITY = 50
BUYERS = 200


def post_json(url, body, headers=None):
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def rush(base_url, ticket, quantities):
    """Send one checkout per quantity, all threads released at once; returns [(quantity, status, body)]."""
    barrier = threading.Barrier(len(quantities))
    results = []
    url = f"{base_url}/events/{ticket.event_id}/tickets/{ticket.id}/checkout"  # read here: rows stay in this thread

    def buy(i, quantity):
        barrier.wait()
        status, body = post_json(url, {"quantity": quantity, "email": f"fan{i}@example.com"})
        results.append((quantity, status, body))

    threads = [threading.Thread(target=buy, args=(i, q)) for i, q in enumerate(quantities)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


@pytest.fixture(scope="module")
def server(app, gunicorn_shop):
    """The shop under gunicorn with 4 workers, on the session's database (``app`` built its schema)."""
    with gunicorn_shop(workers=4) as served:
        yield served.url


def pay_all(base_url, stripe_server, results):
    for _, status, body in results:
        if status == 201:
            order = db.session.get(TicketOrder, body["order_id"])
            event = stripe_server.complete(order.checkout_ref)
            payload = json.dumps(event)
            request = urllib.request.Request(f"{base_url}/webhooks/stripe", data=payload.encode(), method="POST",
                                             headers={"Content-Type": "application/json",
                                                      "Stripe-Signature": stripe_server.sign(payload, WEBHOOK_SECRET)})
            with urllib.request.urlopen(request, timeout=30) as response:
                assert response.status == 200


def sold_and_held(ticket):
    db.session.rollback()
    return db.session.execute(select(TicketType.sold_quantity, TicketType.held_quantity)
                              .where(TicketType.id == ticket.id)).one()


@pytest.mark.parametrize("mixed", [False, True], ids=["one each", "one to four each"])
def test_rush_never_oversells_and_never_fails_with_5xx(ctx, server, stripe_server, make, mixed):
    ticket = make.ticket(capacity=CAPACITY)
    quantities = [random.randint(1, 4) if mixed else 1 for _ in range(BUYERS)]

    results = rush(server, ticket, quantities)

    statuses = [status for _, status, _ in results]
    assert not [s for s in statuses if s >= 500], statuses
    assert set(statuses) <= {201, 409}
    held = sum(q for q, status, _ in results if status == 201)
    sold, held_in_db = sold_and_held(ticket)
    assert held == held_in_db and sold == 0
    if mixed:
        # Everyone refused asked for more than was left when they were refused.
        assert CAPACITY - 3 <= held <= CAPACITY
    else:
        assert held == CAPACITY and statuses.count(409) == BUYERS - CAPACITY
    assert all("Sold out" in body["error"] or "left" in body["error"] for _, status, body in results if status == 409)

    pay_all(server, stripe_server, results)

    sold, held_in_db = sold_and_held(ticket)
    assert (sold, held_in_db) == (held, 0)
    paid = db.session.execute(select(func.sum(TicketOrder.quantity))
                              .where(TicketOrder.ticket_id == ticket.id, TicketOrder.status == "paid")).scalar_one()
    assert paid == sold


QUOTA = 60


def test_rush_of_mixed_orders_ends_exactly_at_the_shared_quota(ctx, server, stripe_server, make):
    """200 buyers at once, each ordering two tickets over two types (named in either order) that share a
    quota of 60 below both types' own capacities: exactly 30 orders are held, then paid; nothing oversold."""
    event = make.event()
    standing = make.ticket(event, name="Standing", capacity=100)
    early = make.ticket(event, name="Early bird", capacity=100)
    quota_id = create_quota(event.id, name="floor", capacity=QUOTA, ticket_ids=[standing.id, early.id]).id
    shapes = [[(standing.id, 1), (early.id, 1)], [(early.id, 1), (standing.id, 1)], [(standing.id, 2)],
              [(early.id, 2)]]
    url, barrier, results = f"{server}/events/{event.id}/checkout", threading.Barrier(BUYERS), []

    def buy(i):
        items = [{"ticket_id": t, "quantity": q} for t, q in shapes[i % len(shapes)]]
        barrier.wait()
        results.append(post_json(url, {"items": items, "email": f"fan{i}@example.com"}))

    threads = [threading.Thread(target=buy, args=(i,)) for i in range(BUYERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    statuses = [status for status, _ in results]
    assert not [s for s in statuses if s >= 500], statuses
    assert statuses.count(201) == QUOTA // 2 and statuses.count(409) == BUYERS - QUOTA // 2, statuses
    db.session.rollback()
    quota = db.session.get(Quota, quota_id)
    assert (quota.sold_quantity, quota.held_quantity) == (0, QUOTA)
    assert sum(sold_and_held(t)[1] for t in (standing, early)) == QUOTA

    pay_all(server, stripe_server, [(None, status, body) for status, body in results])
    db.session.rollback()
    quota = db.session.get(Quota, quota_id, populate_existing=True)
    assert (quota.sold_quantity, quota.held_quantity) == (QUOTA, 0)
    assert sum(sold_and_held(t)[0] for t in (standing, early)) == QUOTA
