"""The organizer's commands added with the console: staff, publishing and editing, partial refunds, healing sweeps."""
from datetime import timedelta
from decimal import Decimal

import pytest

from shop.extensions import db
from shop.models import ApiToken, AuditEntry, Event, OrderHistory, TicketType, User
from shop.models.base import utcnow


def test_grant_staff_creates_an_account_with_a_password_shown_once(shop, auth, form_client):
    result = shop("grant-staff", "Door@Example.com", "--role", "door")

    assert result.exit_code == 0, result.output
    user = db.session.query(User).one()
    assert (user.email, user.role) == ("door@example.com", "door")
    password = result.output.split("with the password ")[1].split(" ")[0]
    auth.login(user, password=password)
    assert form_client.get("/console/").status_code == 200


def test_grant_staff_gives_an_existing_buyer_a_role_and_revoke_takes_it(shop, make):
    buyer = make.user(email="ada@example.com")

    granted = shop("grant-staff", "ada@example.com", "--role", "admin")
    revoked = shop("revoke-staff", "ada@example.com")
    again = shop("revoke-staff", "ada@example.com")

    assert granted.exit_code == 0 and "password" not in granted.output
    assert revoked.exit_code == 0 and db.session.get(User, buyer.id).role is None
    assert again.exit_code == 1 and "ada@example.com is not staff." in again.output
    assert [e.action for e in db.session.query(AuditEntry).order_by(AuditEntry.id)] == ["staff.grant", "staff.revoke"]


def test_grant_staff_refuses_an_unknown_role(shop):
    result = shop("grant-staff", "x@example.com", "--role", "owner")
    assert result.exit_code == 2 and "'owner' is not one of 'admin', 'door'" in result.output


def test_create_api_token_for_staff_only(shop, make):
    make.user(email="buyer@example.com")
    make.user(email="scan@example.com", role="door")

    refused = shop("create-api-token", "buyer@example.com")
    made = shop("create-api-token", "scan@example.com")

    assert refused.exit_code == 1 and "is not staff" in refused.output
    assert made.exit_code == 0 and made.output.startswith("shop_")
    assert db.session.query(ApiToken).one().token_hash == ApiToken.digest(made.output.strip())


def test_create_event_makes_a_draft_and_publish_event_publishes_it(shop, client):
    created = shop("create-event", "--title", "Jazz Brunch", "--starts-at", "2030-03-01T19:30:00+01:00",
                   "--venue", "Blue Note")
    event = db.session.query(Event).one()
    shop("add-ticket", event.id, "--name", "Seat", "--price", "10.00", "--capacity", "5")
    assert client.get(f"/events/{event.id}").status_code == 404

    published = shop("publish-event", event.id)

    assert f"(a draft: publish it with flask --app wsgi shop publish-event {event.id})" in created.output
    assert published.exit_code == 0 and f"Published event {event.id}: Jazz Brunch" in published.output
    assert client.get(f"/events/{event.id}").status_code == 200
    assert shop("publish-event", 999999).output.strip().endswith("There is no event 999999.")


def test_edit_ticket_refuses_a_capacity_below_sold_plus_held(shop, make, place_order):
    ticket = make.ticket(capacity=10)
    place_order(ticket, quantity=4)

    refused = shop("edit-ticket", ticket.id, "--capacity", "3")
    edited = shop("edit-ticket", ticket.id, "--capacity", "4", "--price", "12.00", "--hidden",
                  "--on-sale-until", "2030-01-01T00:00Z")

    assert refused.exit_code == 2 and "the capacity cannot be below the 4 seat(s) sold or held" in refused.output
    assert edited.exit_code == 0, edited.output
    ticket = db.session.get(TicketType, ticket.id)
    assert (ticket.capacity, ticket.price, ticket.hidden, ticket.on_sale_until.year) == (4, Decimal("12.00"), True,
                                                                                          2030)


def test_edit_event_and_edit_discount(shop, make):
    event = make.event(title="Old")
    make.discount("SPRING", percent_off=10)

    assert shop("edit-event", event.id, "--title", "New", "--starts-at", "2031-01-01T20:00Z").exit_code == 0
    assert shop("edit-discount", "spring", "--amount-off", "3.00", "--max-uses", "9").exit_code == 0
    assert shop("edit-event", event.id).exit_code == 2

    assert db.session.get(Event, event.id).title == "New"
    assert "Saved discount SPRING: 3.00 off, at most 9 uses" in shop("edit-discount", "SPRING", "--max-uses",
                                                                        "9").output


def test_refund_with_an_amount_refunds_part_and_twice_on_purpose(shop, stripe_server, make, place_order, pay):
    order = pay(place_order(make.ticket(price="20.00"), quantity=2))

    first = shop("refund", order.id, "--amount", "5.00")
    second = shop("refund", order.id, "--amount", "5.00")

    assert first.exit_code == 0 and second.exit_code == 0, first.output + second.output
    assert "the order is now paid" in second.output
    assert sorted(r["amount"] for r in stripe_server.refunds.values()
                  if r["payment_intent"] == order.payment_ref) == [500, 500]
    keys = [r.headers.get("Idempotency-Key") for r in stripe_server.requests
            if r.path == "/v1/refunds" and r.params.get("payment_intent") == order.payment_ref]
    assert len(set(keys)) == 2 and all(k.startswith(f"refund-order-{order.id}-") for k in keys)


def test_sweep_older_than_heals_every_order_now_with_a_progress_bar(shop, stripe_server, make, place_order, reload):
    ticket = make.ticket(capacity=10)
    lost = [place_order(ticket) for _ in range(3)]  # paid at Stripe, but no event ever reached us
    for order in lost:
        stripe_server.complete(order.checkout_ref)
    open_one = place_order(ticket)
    assert shop("sweep").output.strip() == "Nothing to settle."  # too young for the scheduled sweep

    result = shop("sweep", "--older-than", "0s")

    assert result.exit_code == 0, result.output
    assert "Re-reading orders" in result.output  # click draws the bar itself only on a terminal
    assert "3 paid" in result.output and "1 unchanged: still_open" in result.output
    assert [reload(o).status for o in lost] == ["paid"] * 3 and reload(open_one).status == "pending"
    assert {h.source for h in db.session.query(OrderHistory)} == {"cli"}


def test_sweep_older_than_leaves_younger_orders(shop, stripe_server, make, place_order, reload):
    order = place_order(make.ticket())
    stripe_server.complete(order.checkout_ref)

    assert shop("sweep", "--older-than", "2h").output.strip().endswith("Nothing to settle.")
    order.created_at = utcnow() - timedelta(hours=3)
    db.session.commit()
    assert "1 paid" in shop("sweep", "--older-than", "2h").output
    assert reload(order).status == "paid"


@pytest.mark.parametrize("duration", ["15", "1w", "-5m", "m", "1.5h"])
def test_sweep_refuses_a_malformed_duration(shop, duration):
    result = shop("sweep", "--older-than", duration)
    assert result.exit_code == 2 and "is not a duration like 0s, 15m, 2h or 1d" in result.output
