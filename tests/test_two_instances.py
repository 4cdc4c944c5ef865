"""Two shop instances (two gunicorn masters on two ports, as on two VMs) on one MariaDB and one Redis."""
import random
import threading

import pytest

from tests.test_rush import pay_all, post_json, sold_and_held

pytestmark = pytest.mark.slow

CAPACITY = 40
BUYERS = 120


@pytest.fixture(scope="module")
def two_servers(app, gunicorn_shop):
    """Two instances with 2 workers each on the session's database."""
    with gunicorn_shop(workers=2) as first, gunicorn_shop(workers=2) as second:
        yield first.url, second.url


def split_rush(urls, ticket, buyers):
    """One checkout per buyer, every other one on the other instance, all released at once; returns statuses."""
    barrier = threading.Barrier(buyers)
    results = []
    path = f"/events/{ticket.event_id}/tickets/{ticket.id}/checkout"

    def buy(i):
        barrier.wait()
        status, body = post_json(urls[i % 2] + path, {"quantity": 1, "email": f"split{i}@example.com"})
        results.append((1, status, body))

    threads = [threading.Thread(target=buy, args=(i,)) for i in range(buyers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_a_rush_split_across_two_instances_sells_exactly_the_capacity(ctx, two_servers, stripe_server, make):
    ticket = make.ticket(capacity=CAPACITY)
    results = split_rush(two_servers, ticket, BUYERS)
    statuses = [status for _, status, _ in results]
    assert statuses.count(201) == CAPACITY and statuses.count(409) == BUYERS - CAPACITY, statuses
    assert sold_and_held(ticket) == (0, CAPACITY)  # also ends this test's read, so it sees the new orders
    # Payments come back through either instance's webhook.
    pay_all(two_servers[0], stripe_server, results[::2])
    pay_all(two_servers[1], stripe_server, results[1::2])
    assert sold_and_held(ticket) == (CAPACITY, 0)


def test_rate_limits_are_counted_across_instances_in_one_redis(ctx, gunicorn_shop, make):
    # A limit of its own, so counts left in Redis by other runs never meet this one.
    limit = f"3 per {random.randint(100, 999)} minutes"
    settings = {"RATELIMIT_ENABLED": "true", "RATELIMIT_STORAGE_URI": "redis://127.0.0.1:6379/5",
                "SHOP_LIMIT_CHECKOUT": limit}
    ticket = make.ticket(capacity=100)
    path = f"/events/{ticket.event_id}/tickets/{ticket.id}/checkout"
    with gunicorn_shop(workers=1, **settings) as first, gunicorn_shop(workers=1, **settings) as second:
        statuses = [post_json(url + path, {"quantity": 1, "email": f"limited{i}@example.com"})[0]
                    for i, url in enumerate([first.url, second.url, first.url, second.url])]
    assert statuses == [201, 201, 201, 429]
