"""Checkout: the buy form, what Stripe is asked for, and every way a request is refused."""
import re
from datetime import timedelta
from decimal import Decimal

import pytest

from shop.extensions import db
from shop.models import TicketOrder
from shop.models.base import utcnow
from shop.payments import order_token
from shop.services.checkout import UNUSABLE_CODE


def order_count():
    return db.session.query(TicketOrder).count()


def buy(client, ticket, **fields):
    data = {"quantity": "1", "email": "buyer@example.com", **fields}
    return client.post(f"/events/{ticket.event_id}/tickets/{ticket.id}/checkout", data=data)


def test_event_page_lists_ticket_types_with_prices_and_seats_left(ctx, client, make):
    ticket = make.ticket(name="Balcony", price="45.00", capacity=40, sold_quantity=5)
    page = client.get(f"/events/{ticket.event_id}").get_data(as_text=True)
    assert "Balcony" in page and "45.00 USD" in page and "35 left" in page


def test_index_lists_upcoming_events_only(ctx, client, make):
    make.event(title="Next week", starts_at=utcnow() + timedelta(days=7))
    make.event(title="Last week", starts_at=utcnow() - timedelta(days=7))
    page = client.get("/").get_data(as_text=True)
    assert "Next week" in page and "Last week" not in page


def test_checkout_creates_pending_order_and_stripe_session(ctx, form_client, stripe_server, make, reload):
    ticket = make.ticket(price="20.00")
    response = buy(form_client, ticket, quantity="3")

    assert response.status_code == 303
    order = db.session.query(TicketOrder).one()
    session = stripe_server.sessions[order.checkout_ref]
    assert response.headers["Location"] == session["url"]
    assert order.status == "pending" and order.quantity == 3 and order.total_amount == Decimal("60.00")
    assert session["metadata"] == {"order_id": str(order.id), "order_token": order_token(order.id),
                                   "event_id": str(ticket.event_id), "ticket_id": str(ticket.id)}
    assert session["client_reference_id"] == str(order.id)
    assert session["amount_total"] == 6000 and session["customer_email"] == "buyer@example.com"
    assert "{CHECKOUT_SESSION_ID}" in session["success_url"]
    assert abs(session["expires_at"] - (utcnow() + timedelta(minutes=31)).timestamp()) < 120
    create = [r for r in stripe_server.requests if r.method == "POST" and r.path == "/v1/checkout/sessions"][-1]
    assert create.headers.get("Idempotency-Key") == f"checkout-order-{order.id}"
    assert reload(ticket).held_quantity == 3


def test_json_checkout_answers_order_id_and_checkout_url(ctx, client, stripe_server, make):
    ticket = make.ticket()
    response = client.post(f"/events/{ticket.event_id}/tickets/{ticket.id}/checkout",
                           json={"quantity": 2, "email": "api@example.com"})
    assert response.status_code == 201
    order = db.session.get(TicketOrder, response.json["order_id"])
    assert order.quantity == 2
    assert response.json["checkout_url"] == stripe_server.sessions[order.checkout_ref]["url"]


def test_logged_in_buyer_order_carries_user_id(ctx, app, form_client, make, auth):
    user = make.user()
    auth.login(user)
    buy(form_client, make.ticket())
    assert db.session.query(TicketOrder).one().user_id == user.id


def test_discount_is_applied_and_rounded_in_buyers_favour(ctx, form_client, stripe_server, make):
    ticket = make.ticket(price="9.99")
    make.discount("third", percent_off=33)
    assert buy(form_client, ticket, discount_code="Third", quantity="2").status_code == 303
    order = db.session.query(TicketOrder).one()
    # 9.99 − 33 % = 6.6933 → 6.69 per ticket
    assert order.unit_price == Decimal("6.69") and order.total_amount == Decimal("13.38")
    assert stripe_server.sessions[order.checkout_ref]["amount_total"] == 1338


def test_fixed_discount_never_goes_below_zero(ctx, make):
    assert make.discount("FREE", amount_off=Decimal("10.00")).discounted_price(Decimal("5.00")) == Decimal("0.00")


def test_total_below_stripes_smallest_charge_is_refused_before_stripe(ctx, form_client, stripe_server, make):
    ticket = make.ticket(price="5.00")
    make.discount("ALMOST", amount_off=Decimal("4.80"))
    sessions_before = len(stripe_server.sessions)
    response = buy(form_client, ticket, discount_code="almost")
    assert response.status_code == 400 and "below the smallest card payment" in response.get_data(as_text=True)
    assert order_count() == 0 and len(stripe_server.sessions) == sessions_before


@pytest.mark.parametrize("fields, status, message", [
    ({"email": ""}, 400, "Enter your email address."),
    ({"email": "not-an-email"}, 400, "Enter a valid email address."),
    ({"quantity": "two"}, 400, "Not a valid integer value."),
    ({"quantity": "1.5"}, 400, "Not a valid integer value."),
    ({"quantity": "0"}, 400, "Choose at least one ticket."),
    ({"quantity": "-3"}, 400, "Choose at least one ticket."),
    ({"quantity": "11"}, 400, "You can buy between 1 and 10 tickets at a time."),
    ({"quantity": "6"}, 409, "Only 5 tickets left; please choose fewer."),
    # One neutral answer for every unusable code, so the form cannot tell which codes exist.
    ({"discount_code": "NOPE"}, 400, UNUSABLE_CODE),
    ({"discount_code": "OLD"}, 400, UNUSABLE_CODE),
    ({"discount_code": "SOON"}, 400, UNUSABLE_CODE),
    ({"discount_code": "GONE"}, 400, UNUSABLE_CODE),
    ({"discount_code": "OTHER"}, 400, UNUSABLE_CODE),
])
def test_bad_input_shows_the_form_again_and_creates_no_order(ctx, form_client, make, reload, fields, status, message):
    ticket = make.ticket(capacity=5)
    now = utcnow()
    make.discount("OLD", valid_until=now - timedelta(days=1))
    make.discount("SOON", valid_from=now + timedelta(days=1))
    make.discount("GONE", max_uses=2, used_count=2)
    make.discount("OTHER", event_id=make.event().id)

    response = buy(form_client, ticket, **fields)

    assert response.status_code == status
    assert message in response.get_data(as_text=True)
    assert order_count() == 0 and reload(ticket).held_quantity == 0


@pytest.mark.parametrize("body", [
    {"quantity": 1}, {"email": "a@example.com"}, {"quantity": None, "email": "a@example.com"},
    {"quantity": [1], "email": "a@example.com"}, {"quantity": 1, "email": {"x": 1}}, ["not", "an", "object"], "text",
])
def test_bad_json_gets_a_clear_error_and_no_order(ctx, client, make, body):
    ticket = make.ticket()
    response = client.post(f"/events/{ticket.event_id}/tickets/{ticket.id}/checkout", json=body)
    assert response.status_code == 400 and response.json["error"]
    assert order_count() == 0


def test_unknown_event_or_ticket_or_ticket_of_another_event_is_404(ctx, form_client, make):
    ticket = make.ticket()
    other = make.event()
    form = {"quantity": "1", "email": "a@b.co"}
    assert form_client.post(f"/events/999999/tickets/{ticket.id}/checkout", data=form).status_code == 404
    assert form_client.post(f"/events/{ticket.event_id}/tickets/999999/checkout", data=form).status_code == 404
    assert form_client.post(f"/events/{other.id}/tickets/{ticket.id}/checkout", data=form).status_code == 404
    assert order_count() == 0


def test_event_that_already_started_sells_nothing(ctx, form_client, make):
    ticket = make.ticket(event=make.event(starts_at=utcnow() - timedelta(hours=1)))
    assert buy(form_client, ticket).status_code == 400
    assert order_count() == 0


def test_csrf_is_enforced_on_the_checkout_form(ctx, csrf_client, make):
    ticket = make.ticket()
    path = f"/events/{ticket.event_id}/tickets/{ticket.id}/checkout"
    refused = csrf_client.post(path, data={"quantity": "1", "email": "a@example.com"})
    assert refused.status_code == 400 and order_count() == 0
    token = csrf_client.token(f"/events/{ticket.event_id}")
    accepted = csrf_client.post(path, data={"quantity": "1", "email": "a@example.com", "csrf_token": token})
    assert accepted.status_code == 303 and order_count() == 1


@pytest.mark.parametrize("failure", ["error", "down"])
def test_stripe_failure_shows_try_again_and_leaves_no_payable_order(
        ctx, form_client, stripe_server, make, reload, failure):
    ticket = make.ticket(capacity=10)
    if failure == "error":
        stripe_server.fail_next(2, status=500)  # the library's first try and its one retry
    else:
        stripe_server.down = True
    try:
        response = buy(form_client, ticket, quantity="2")
    finally:
        stripe_server.down = False
    assert response.status_code == 502
    assert "try again" in response.get_data(as_text=True)
    order = db.session.query(TicketOrder).one()
    assert order.status == "failed" and order.checkout_ref is None
    assert reload(ticket).held_quantity == 0


def test_cancel_link_releases_the_hold_and_expires_the_session(ctx, form_client, stripe_server, make, reload):
    ticket = make.ticket(capacity=4)
    buy(form_client, ticket, quantity="4")
    order = db.session.query(TicketOrder).one()
    cancel_url = stripe_server.sessions[order.checkout_ref]["cancel_url"]

    confirm = form_client.get(cancel_url.replace("http://localhost", ""))
    assert confirm.status_code == 200 and "Cancel this checkout?" in confirm.get_data(as_text=True)
    assert reload(order).status == "pending"  # a GET changes nothing
    token = re.search(r'name="token" value="([^"]+)"', confirm.get_data(as_text=True)).group(1)

    page = form_client.post("/checkout/cancel", data={"token": token})

    assert page.status_code == 200 and "Nothing was charged" in page.get_data(as_text=True)
    assert reload(order).status == "cancelled" and reload(ticket).held_quantity == 0
    assert stripe_server.sessions[order.checkout_ref]["status"] == "expired"


def test_cancel_link_with_a_forged_token_changes_nothing(ctx, form_client, make, reload):
    ticket = make.ticket()
    buy(form_client, ticket)
    order = db.session.query(TicketOrder).one()
    assert form_client.get(f"/checkout/cancel?order={order.id}&token=forged").status_code == 404
    assert form_client.post("/checkout/cancel", data={"token": "forged"}).status_code == 404
    assert reload(order).status == "pending"


def test_sold_out_ticket_type_says_so(ctx, form_client, make):
    ticket = make.ticket(capacity=2)
    assert buy(form_client, ticket, quantity="2").status_code == 303
    response = buy(form_client, ticket, email="late@example.com")
    assert response.status_code == 409 and "Sold out" in response.get_data(as_text=True)
    assert re.search(r"Sold out", form_client.get(f"/events/{ticket.event_id}").get_data(as_text=True))
