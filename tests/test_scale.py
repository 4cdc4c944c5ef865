"""Flat at data scale: paginated pages, a bulk fill, the retention job, and index use for request-path queries."""
from datetime import timedelta

import pytest
from sqlalchemy import event as sa_event
from sqlalchemy import select, text, update

from shop.extensions import db
from shop.models import Admission, Event, TicketOrder, User
from shop.models.base import utcnow
from shop.models.payment_events import PaymentEvent
from shop.ops.scale import Volume, prune_event_payloads
from shop.services.accounts import orders_of
from shop.services.catalog import EVENTS_PER_PAGE, upcoming_events
from shop.services.console import dashboard_events, sales_by_day
from shop.services.exports import orders_csv


def test_home_page_shows_one_page_of_upcoming_events_and_links_the_next(ctx, client, make):
    soon = utcnow() + timedelta(days=1)
    for n in range(EVENTS_PER_PAGE + 1):
        make.event(title=f"Gig {n:02d}", starts_at=soon + timedelta(hours=n))
    make.event(title="Gig past", starts_at=utcnow() - timedelta(days=1))

    first = client.get("/").get_data(as_text=True)
    assert "Gig 00" in first and f"Gig {EVENTS_PER_PAGE - 1}" in first and f"Gig {EVENTS_PER_PAGE}" not in first
    assert 'href="/?page=2"' in first and "Gig past" not in first
    second = client.get("/?page=2").get_data(as_text=True)
    assert f"Gig {EVENTS_PER_PAGE}" in second and "Gig 00" not in second and 'rel="next"' not in second


@pytest.mark.parametrize("page", ["0", "-1", "abc", "1001", "2.5"])
def test_a_bad_page_number_is_a_clear_400(ctx, client, page):
    response = client.get(f"/?page={page}")
    assert response.status_code == 400 and "whole number from 1 to 1000" in response.get_data(as_text=True)


def test_profile_pages_through_a_big_buyers_orders(ctx, make, place_order, holds):
    user = make.user(email="many@example.com")
    tickets = [make.ticket(capacity=100) for _ in range(3)]
    for n in range(7):
        holds.end(place_order(tickets[n % 3], user=user, email=user.email))
    first, more = orders_of(user, page=1, per_page=5)
    second, no_more = orders_of(user, page=2, per_page=5)
    assert len(first) == 5 and more and len(second) == 2 and not no_more
    assert {o.id for o in first}.isdisjoint(o.id for o in second)
    assert [o.created_at for o in first + second] == sorted((o.created_at for o in first + second), reverse=True)


def test_profile_page_links_to_the_next_page(ctx, make, place_order, holds, auth, form_client):
    user = make.user(email="pages@example.com")
    ticket = make.ticket(capacity=500)
    for _ in range(51):
        holds.end(place_order(ticket, user=user, email=user.email))
    auth.login(user)
    assert 'href="/profile?page=2"' in form_client.get("/profile").get_data(as_text=True)
    assert form_client.get("/profile?page=x").status_code == 400


def test_pruned_events_keep_their_ids_so_a_redelivery_is_still_a_duplicate(ctx, make, place_order, stripe_server,
                                                                            webhook, reload):
    order = place_order(make.ticket())
    event = stripe_server.complete(order.checkout_ref)
    assert webhook.post(event).json["kind"] == "applied"
    long_ago = utcnow() - timedelta(days=91)
    db.session.execute(update(PaymentEvent).values(received_at=long_ago, processed_at=long_ago))
    db.session.commit()

    assert prune_event_payloads(timedelta(days=90)) == 1
    stored = db.session.get(PaymentEvent, event["id"])
    db.session.refresh(stored)
    assert stored.payload is None and stored.processed_at is not None
    assert webhook.post(event).json["kind"] == "duplicate"
    assert reload(order).status == "paid"


def test_prune_keeps_recent_and_unprocessed_payloads(ctx):
    old = utcnow() - timedelta(days=200)
    db.session.add_all([
        PaymentEvent(id="ev-old-done", type="t", delivered_by="webhook", received_at=old, processed_at=old,
                     payload="{}"),
        PaymentEvent(id="ev-old-open", type="t", delivered_by="webhook", received_at=old, payload="{}"),
        PaymentEvent(id="ev-new-done", type="t", delivered_by="webhook", processed_at=utcnow(), payload="{}")])
    db.session.commit()
    assert prune_event_payloads(timedelta(days=90), batch=1) == 1
    payloads = dict(db.session.execute(select(PaymentEvent.id, PaymentEvent.payload)).all())
    assert payloads == {"ev-old-done": None, "ev-old-open": "{}", "ev-new-done": "{}"}


def test_prune_events_command_and_its_refusals(shop, ctx):
    result = shop("prune-events", "--older-than", "90d")
    assert result.exit_code == 0 and "Dropped the payloads of 0 processed events" in result.output
    too_soon = shop("prune-events", "--older-than", "1d")
    assert too_soon.exit_code == 2 and "at least 4 days" in too_soon.output
    assert shop("prune-events", "--older-than", "soon").exit_code == 2


def test_fill_scale_adds_the_asked_volume_with_one_big_buyer(shop, ctx):
    result = shop("fill-scale", "--events", 40, "--orders", 600, "--stored-events", 300, "--big-buyer-orders", 25)
    assert result.exit_code == 0, result.output
    assert db.session.query(Event).count() == 40 and db.session.query(TicketOrder).count() == 600
    assert db.session.query(Admission).count() == 1200 and db.session.query(PaymentEvent).count() == 300
    buyer = db.session.execute(select(User).where(User.email == Volume.big_buyer_email)).scalar_one()
    assert buyer.check_password(Volume.big_buyer_password)
    orders, more = orders_of(buyer, per_page=50)
    assert len(orders) == 25 and not more
    upcoming, _ = upcoming_events()
    assert 0 < len(upcoming) < 40  # mostly past


def _captured(run):
    """The SELECT statements ``run()`` sends, as text with their parameters, to EXPLAIN each."""
    statements = []

    def capture(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("SELECT"):
            statements.append(cursor.mogrify(statement, parameters))

    sa_event.listen(db.engine, "before_cursor_execute", capture)
    try:
        run()
    finally:
        sa_event.remove(db.engine, "before_cursor_execute", capture)
    return statements


GROWING = {"ticket_orders", "admissions", "stripe_events", "events", "order_history"}


def _full_scans(statements):
    scans = []
    for statement in statements:
        for row in db.session.execute(text("EXPLAIN " + statement.replace("%", "%%")).execution_options(
                no_parameters=True)).mappings():
            if row["table"] in GROWING and row["type"] == "ALL":
                scans.append((row["table"], statement[:160]))
    return scans


def test_request_path_queries_use_indexes_not_full_scans(shop, ctx, app):
    if db.engine.dialect.name not in ("mysql", "mariadb"):
        pytest.skip("EXPLAIN is checked on MariaDB")
    assert shop("fill-scale", "--events", 300, "--orders", 20000, "--stored-events", 20000,
                "--big-buyer-orders", 60).exit_code == 0
    buyer = db.session.execute(select(User).where(User.email == Volume.big_buyer_email)).scalar_one()
    order = db.session.execute(select(TicketOrder).where(TicketOrder.user_id == buyer.id).limit(1)).scalar_one()
    code = db.session.execute(select(Admission.code).where(Admission.order_id == order.id).limit(1)).scalar_one()
    from shop.ops.doctor import _missing_order_id, _unprocessed_events
    from shop.ops.health import health_report
    from shop.services.accounts import order_of
    from shop.services.catalog import visible_event
    from shop.services.sweeper import sweep
    from shop.services.tickets import find_admission

    paths = {
        "home": lambda: upcoming_events(),
        "event page": lambda: visible_event(order.event_id),
        "profile": lambda: orders_of(buyer),
        "order page": lambda: order_of(buyer, order.id),
        "ticket page": lambda: find_admission(code),
        "dashboard": lambda: (dashboard_events(), sales_by_day()),
        "export": lambda: list(orders_csv(order.event_id)),
        "healthz": health_report,
        "sweeper": sweep,
        "doctor": lambda: (_unprocessed_events(), _missing_order_id()),
    }
    for name, run in paths.items():
        statements = _captured(run)
        db.session.rollback()
        assert statements, name
        assert _full_scans(statements) == [], name
