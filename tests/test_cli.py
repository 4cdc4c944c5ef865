"""The ``flask shop …`` commands: what the organizer creates, refunds and settles from a terminal."""
from datetime import datetime, timedelta
from decimal import Decimal

import pytest

from shop.extensions import db
from shop.models import Admission, DiscountCode, Event, TicketType
from shop.models.base import utcnow
from shop.services.fulfilment import fulfil_checkout


def assert_refused(result, message):
    """The command stopped with a non-zero status and ``message``, not with a traceback."""
    assert result.exit_code != 0, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)  # click's clean exit, not a crash
    assert message in result.output, result.output


def catalogue_rows():
    return {model.__name__: db.session.query(model).count() for model in (Event, TicketType, DiscountCode)}


@pytest.fixture
def paid_order(stripe_server, make, place_order, reload):
    """An order for 2 × 20.00, paid on (fake) Stripe and fulfilled from the success page."""
    ticket = make.ticket(price="20.00", capacity=10)
    order = place_order(ticket, quantity=2)
    stripe_server.complete(order.checkout_ref)
    fulfil_checkout(order.checkout_ref, "success_page")
    order = reload(order)
    assert order.status == "paid"
    return order


def test_create_event_stores_its_start_in_utc(shop):
    result = shop("create-event", "--title", "Jazz Brunch", "--starts-at", "2030-03-01T19:30:00+01:00",
                  "--venue", "Blue Note", "--description", "Eggs and bebop.")

    assert result.exit_code == 0, result.output
    event = db.session.query(Event).one()
    assert (event.title, event.venue, event.description) == ("Jazz Brunch", "Blue Note", "Eggs and bebop.")
    assert event.starts_at == datetime(2030, 3, 1, 18, 30)
    assert f"Created event {event.id}: Jazz Brunch at Blue Note, 2030-03-01 18:30 UTC" in result.output


def test_add_ticket_adds_a_ticket_type_with_nothing_sold(shop, make):
    event = make.event()

    result = shop("add-ticket", event.id, "--name", "Balcony", "--price", "45.50", "--capacity", "40")

    assert result.exit_code == 0, result.output
    ticket = db.session.query(TicketType).one()
    assert (ticket.event_id, ticket.name, ticket.price, ticket.capacity) == (event.id, "Balcony", Decimal("45.50"), 40)
    assert ticket.sold_quantity == 0 and ticket.held_quantity == 0
    assert f"Added ticket type {ticket.id} to event {event.id}: Balcony, 45.50, 40 seats" in result.output


def test_create_discount_percent_off_for_one_event_with_max_uses(shop, make):
    event = make.event()

    result = shop("create-discount", "spring-15", "--percent-off", "15", "--max-uses", "3", "--event", event.id)

    assert result.exit_code == 0, result.output
    discount = db.session.query(DiscountCode).one()
    assert (discount.code, discount.percent_off, discount.amount_off) == ("SPRING-15", 15, None)
    assert (discount.max_uses, discount.event_id, discount.used_count) == (3, event.id, 0)
    assert f"Created discount SPRING-15: 15% off, at most 3 uses, for event {event.id}" in result.output


def test_create_discount_amount_off_for_every_event(shop):
    result = shop("create-discount", "FIVER", "--amount-off", "5.00")

    assert result.exit_code == 0, result.output
    discount = db.session.query(DiscountCode).one()
    assert (discount.code, discount.percent_off, discount.amount_off) == ("FIVER", None, Decimal("5.00"))
    assert discount.max_uses is None and discount.event_id is None
    assert "Created discount FIVER: 5.00 off" in result.output


def test_seed_demo_twice_adds_nothing_the_second_time(shop):
    first = shop("seed-demo")
    after_first = catalogue_rows()

    second = shop("seed-demo")

    assert first.exit_code == 0 and second.exit_code == 0, first.output + second.output
    assert after_first == {"Event": 3, "TicketType": 5, "DiscountCode": 0}
    assert catalogue_rows() == after_first
    assert first.output.count("Created demo event") == 3
    assert second.output.count("Demo event exists") == 3 and "Created" not in second.output
    assert all(event.starts_at > utcnow() for event in db.session.query(Event))


BAD_INPUT = {
    "bad-date": (["create-event", "--title", "Gig", "--starts-at", "next friday", "--venue", "Hall"],
                 "is not an ISO 8601 date and time"),
    "negative-price": (["add-ticket", "{event}", "--name", "Seat", "--price=-5.00", "--capacity", "10"],
                       "must be a non-negative amount"),
    "price-not-a-number": (["add-ticket", "{event}", "--name", "Seat", "--price", "cheap", "--capacity", "10"],
                           "is not an amount like 20.00"),
    "zero-capacity": (["add-ticket", "{event}", "--name", "Seat", "--price", "5.00", "--capacity", "0"],
                      "0 is not in the range x>=1"),
    "ticket-for-unknown-event": (["add-ticket", "999999", "--name", "Seat", "--price", "5.00", "--capacity", "10"],
                                 "There is no event 999999."),
    "both-discount-kinds": (["create-discount", "BOTH", "--percent-off", "10", "--amount-off", "2.00"],
                            "Give exactly one of --percent-off and --amount-off."),
    "neither-discount-kind": (["create-discount", "NEITHER"], "Give exactly one of --percent-off and --amount-off."),
    "negative-amount-off": (["create-discount", "MINUS", "--amount-off=-2.00"], "must be a non-negative amount"),
    "percent-over-100": (["create-discount", "TOOMUCH", "--percent-off", "150"], "150 is not in the range 1<=x<=100"),
    "discount-for-unknown-event": (["create-discount", "LOST", "--percent-off", "10", "--event", "999999"],
                                   "There is no event 999999."),
    "duplicate-code": (["create-discount", "taken", "--percent-off", "50"], "The code TAKEN exists already."),
}


@pytest.mark.parametrize("args, message", BAD_INPUT.values(), ids=BAD_INPUT.keys())
def test_bad_input_exits_non_zero_with_a_clear_message_and_writes_nothing(shop, make, args, message):
    event = make.event()
    make.discount("TAKEN", percent_off=10)
    before = catalogue_rows()

    result = shop(*[arg.format(event=event.id) for arg in args])

    assert_refused(result, message)
    assert catalogue_rows() == before
    assert db.session.query(DiscountCode).one().percent_off == 10


def test_refund_refunds_a_paid_order_through_stripe_once(shop, stripe_server, paid_order, reload):
    order = paid_order

    result = shop("refund", order.id)

    assert result.exit_code == 0, result.output
    assert f"Order {order.id}: refund requested; the order is now refunded" in result.output
    refunds = [r for r in stripe_server.refunds.values() if r["payment_intent"] == order.payment_ref]
    assert len(refunds) == 1 and refunds[0]["amount"] == 4000
    assert refunds[0]["metadata"]["order_id"] == str(order.id)
    create = [r for r in stripe_server.requests if r.method == "POST" and r.path == "/v1/refunds"
              and r.params.get("payment_intent") == order.payment_ref]
    assert [r.headers.get("Idempotency-Key") for r in create] == [f"refund-order-{order.id}"]
    order = reload(order)
    assert order.status == "refunded" and order.refunded_amount == Decimal("40.00")
    assert reload(order.ticket).sold_quantity == 0
    assert all(a.void for a in db.session.query(Admission).filter_by(order_id=order.id))


def test_refunding_an_order_twice_fails_cleanly_and_refunds_once(shop, stripe_server, paid_order, reload):
    order = paid_order
    assert shop("refund", order.id).exit_code == 0

    again = shop("refund", order.id)

    assert_refused(again, f"order {order.id} is refunded; only paid orders can be refunded")
    assert sum(r["payment_intent"] == order.payment_ref for r in stripe_server.refunds.values()) == 1
    assert reload(order).status == "refunded" and reload(order.ticket).sold_quantity == 0


def test_refund_of_an_unknown_order_fails_cleanly(shop):
    assert_refused(shop("refund", 999999), "order 999999 does not exist")


def test_refund_of_an_unpaid_order_changes_nothing(shop, stripe_server, make, reload, place_order):
    order = place_order(make.ticket(), quantity=1)
    refunds_before = len(stripe_server.refunds)

    assert_refused(shop("refund", order.id), "only paid orders can be refunded")
    assert len(stripe_server.refunds) == refunds_before and reload(order).status == "pending"


def test_attention_lists_flagged_orders_with_their_reason(shop, make, place_order):
    ticket = make.ticket(name="Balcony", price="15.00")
    flagged = place_order(ticket, quantity=2, email="flagged@example.com")
    calm = place_order(ticket, quantity=1, email="calm@example.com")
    flagged.needs_attention, flagged.attention_reason = True, "not marked paid: amount 100 does not match"
    db.session.commit()

    result = shop("attention")

    assert result.exit_code == 0, result.output
    assert (f"order {flagged.id} (pending, flagged@example.com, 2 × Balcony, 30.00 USD): "
            "not marked paid: amount 100 does not match") in result.output
    assert f"order {calm.id} " not in result.output and "calm@example.com" not in result.output


def test_attention_says_so_when_no_order_needs_it(shop, make, place_order):
    place_order(make.ticket(), quantity=1)

    result = shop("attention")

    assert result.exit_code == 0 and result.output.strip() == "No order needs attention."


def test_sweep_releases_an_ended_hold_and_expires_its_stripe_session(shop, stripe_server, make, reload, place_order):
    ticket = make.ticket(capacity=10)
    order = place_order(ticket, quantity=3)
    session_id = order.checkout_ref
    order.hold_expires_at = utcnow() - timedelta(minutes=10)
    db.session.commit()
    assert reload(ticket).held_quantity == 3

    result = shop("sweep")

    assert result.exit_code == 0, result.output
    assert "1 expired" in result.output
    assert stripe_server.sessions[session_id]["status"] == "expired"
    assert any(r.method == "POST" and r.path == f"/v1/checkout/sessions/{session_id}/expire"
               for r in stripe_server.requests)
    assert reload(order).status == "expired"
    assert reload(ticket).held_quantity == 0


def test_sweep_leaves_a_live_hold_alone(shop, stripe_server, make, reload, place_order):
    ticket = make.ticket(capacity=10)
    order = place_order(ticket, quantity=2)

    result = shop("sweep")

    assert result.exit_code == 0 and result.output.strip() == "Nothing to settle."
    assert stripe_server.sessions[order.checkout_ref]["status"] == "open"
    assert reload(order).status == "pending" and reload(ticket).held_quantity == 2


def test_sweep_with_stripe_unreachable_fails_with_a_clear_message_and_keeps_the_hold(
        shop, stripe_server, make, reload, place_order):
    ticket = make.ticket(capacity=10)
    order = place_order(ticket, quantity=2)
    order.hold_expires_at = utcnow() - timedelta(minutes=10)
    db.session.commit()

    stripe_server.down = True
    try:
        result = shop("sweep")
    finally:
        stripe_server.down = False

    assert_refused(result, "Stripe could not be reached")
    # The buyer may have paid at the last moment: without Stripe's word the seats stay held.
    assert reload(order).status == "pending" and reload(ticket).held_quantity == 2


def test_create_event_takes_local_times_in_its_time_zone(shop):
    result = shop("create-event", "--title", "Synths", "--starts-at", "2030-07-01T19:30", "--venue", "Warehouse",
                  "--timezone", "Europe/Berlin")

    assert result.exit_code == 0, result.output
    event = db.session.query(Event).one()
    assert event.timezone == "Europe/Berlin" and event.starts_at == datetime(2030, 7, 1, 17, 30)
    assert "2030-07-01 19:30 CEST (Europe/Berlin)" in result.output


def test_create_event_refuses_an_unknown_time_zone(shop):
    result = shop("create-event", "--title", "Synths", "--starts-at", "2030-07-01T19:30", "--venue", "Warehouse",
                  "--timezone", "Mars/Olympus")
    assert_refused(result, "IANA time zone")
    assert catalogue_rows()["Event"] == 0


def test_events_without_a_time_zone_take_the_shops(app, shop, monkeypatch):
    monkeypatch.setitem(app.config, "SHOP_TIMEZONE", "America/New_York")
    result = shop("create-event", "--title", "Gig", "--starts-at", "2030-01-10T20:00", "--venue", "Hall")
    assert result.exit_code == 0, result.output
    event = db.session.query(Event).one()
    assert event.timezone == "America/New_York" and event.starts_at == datetime(2030, 1, 11, 1, 0)
