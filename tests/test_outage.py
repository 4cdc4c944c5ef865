"""A database that stops answering (no refusal, no closed socket: silence) costs a 503 within the client
timeouts, on every kind of request, and the shop recovers when it answers again."""
import json
import threading
import time
import urllib.error
import urllib.request

import pytest
import sqlalchemy as sa

from shop.extensions import db
from tests.support.apps import app_from_environment
from tests.support.db_proxy import DatabaseProxy
from tests.support.factories import Factories

make_ticket = Factories().ticket

pytestmark = pytest.mark.slow  # waits out real timeouts

CONNECT_TIMEOUT = READ_TIMEOUT = 1
# A pooled connection first fails its pre-ping (a read timeout), then the one reconnect SQLAlchemy tries
# waits a read timeout for the server's greeting; a second of slack for everything else.
WITHIN = 2 * READ_TIMEOUT + CONNECT_TIMEOUT + 1


@pytest.fixture
def stalling(app, shop_env, database_url):
    """A shop whose database connections go through a DatabaseProxy, with one-second client timeouts."""
    proxy = DatabaseProxy(database_url)
    shop = app_from_environment(shop_env(
        database_url=proxy.url, SHOP_DB_CONNECT_TIMEOUT=str(CONNECT_TIMEOUT),
        SHOP_DB_READ_TIMEOUT=str(READ_TIMEOUT), SHOP_DB_WRITE_TIMEOUT=str(READ_TIMEOUT)), {"TESTING": True})
    yield shop, proxy
    proxy.resume()
    with shop.app_context():
        db.engine.dispose()
    proxy.close()


def timed(request):
    """``request()``'s response and how long it took; a request still waiting well past the bound fails the test
    (instead of hanging it), in a thread of its own."""
    result = []
    started = time.monotonic()
    thread = threading.Thread(target=lambda: result.append(request()), daemon=True)
    thread.start()
    thread.join(timeout=WITHIN + 10)
    assert result, f"no answer within {WITHIN + 10} s: the database client has no timeout"
    return result[0], time.monotonic() - started


def test_a_silent_database_gets_503s_within_the_timeouts_and_the_shop_recovers(ctx, stalling):
    shop, proxy = stalling
    ticket = make_ticket()
    browser = shop.test_client()
    event_page = f"/events/{ticket.event_id}"
    assert browser.get(event_page).status_code == 200  # a pooled connection through the proxy, alive

    proxy.stall()
    answers = {
        "healthz": timed(lambda: browser.get("/healthz")),
        "event page": timed(lambda: browser.get(event_page)),
        "json client": timed(lambda: browser.get(event_page, headers={"Accept": "application/json"})),
        "checkout json": timed(lambda: browser.post(f"/events/{ticket.event_id}/tickets/{ticket.id}/checkout",
                                                    json={"quantity": 1, "email": "fan@example.com"})),
    }

    for name, (response, seconds) in answers.items():
        assert response.status_code == 503, (name, response.get_data(as_text=True))
        assert seconds < WITHIN, (name, seconds)
        if name != "healthz":
            assert response.headers["Retry-After"] == "5", name
        body = response.get_data(as_text=True)
        assert "127.0.0.1" not in body and "root" not in body, (name, body)
    assert answers["healthz"][0].json == {"status": "unavailable"}
    page = answers["event page"][0]
    assert page.mimetype == "text/html" and "try again in a moment" in page.get_data(as_text=True)
    for name in ("json client", "checkout json"):
        assert answers[name][0].json == {
            "error": "The shop cannot reach its database just now. Please try again in a moment."}, name

    proxy.resume()
    assert browser.get("/healthz").json == {"status": "ok"}
    assert browser.get(event_page).status_code == 200


def test_a_lock_wait_ends_before_the_read_timeout_with_mariadbs_own_error(app, shop_env):
    """A row held by another transaction: the waiting statement gets 1205 (which the checkout retries)
    at innodb_lock_wait_timeout, before the client's read timeout would have given up on the connection."""
    shop = app_from_environment(shop_env(SHOP_DB_READ_TIMEOUT="2"), {"TESTING": True})
    with app.app_context():
        ticket_id = make_ticket().id
    with shop.app_context():
        holder, waiter = db.engine.connect(), db.engine.connect()
        try:
            holder.execute(sa.text("SELECT id FROM tickets WHERE id = :id FOR UPDATE"), {"id": ticket_id})
            started = time.monotonic()
            with pytest.raises(sa.exc.OperationalError) as raised:
                waiter.execute(sa.text("SELECT id FROM tickets WHERE id = :id FOR UPDATE"), {"id": ticket_id})
            waited = time.monotonic() - started
        finally:
            holder.rollback()
            holder.close()
            waiter.close()
            db.engine.dispose()
    assert raised.value.orig.args[0] == 1205  # Lock wait timeout exceeded; try restarting transaction
    assert 0.5 < waited < 2


def test_under_gevent_workers_a_silent_database_costs_a_503_in_time_and_the_worker_recovers(
        ctx, gunicorn_shop, database_url):
    # gunicorn.conf.py's gevent workers talk to MariaDB over blocking sockets (shop/ops/greenlets.py): their
    # timeouts must still end a wait on a silent database, and the worker must serve again once it answers.
    ticket = make_ticket()
    proxy = DatabaseProxy(database_url)
    try:
        with gunicorn_shop(workers=1, database_url=proxy.url, SHOP_DB_CONNECT_TIMEOUT=str(CONNECT_TIMEOUT),
                           SHOP_DB_READ_TIMEOUT=str(READ_TIMEOUT), SHOP_DB_WRITE_TIMEOUT=str(READ_TIMEOUT)) as served:
            with open(served.log_path) as log:
                assert "Using worker: gevent" in log.read()
            event_page = f"{served.url}/events/{ticket.event_id}"
            assert fetch(event_page)[0] == 200
            proxy.stall()
            (status, body), seconds = timed(lambda: fetch(f"{served.url}/healthz"))
            assert status == 503 and seconds < WITHIN, (status, seconds)
            assert json.loads(body) == {"status": "unavailable"}
            proxy.resume()
            status, body = fetch(f"{served.url}/healthz")
            assert status == 200 and json.loads(body) == {"status": "ok"}
            assert fetch(event_page)[0] == 200
    finally:
        proxy.resume()
        proxy.close()


def fetch(url):
    """``(status, body)`` of a GET, whatever the status."""
    try:
        with urllib.request.urlopen(url, timeout=WITHIN + 10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
