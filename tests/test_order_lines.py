"""One order over several ticket types: its lines, their holds, payment, refunds by line, and free orders."""
import threading
from decimal import Decimal

import pytest
from sqlalchemy import select

from shop.extensions import db
from shop.models import Admission, OrderStatus, OutboxMessage, TicketOrder, TicketType
from shop.services.checkout import UNUSABLE_CODE, CheckoutRequest, ReturnUrls, SoldOut, start_checkout
from shop.services.refunds import RefundAlreadyRequested, refund_order, refund_order_line

URLS = ReturnUrls(success="http://shop.test/checkout/success?session_id={CHECKOUT_REF}",
                  cancel_for=lambda o: f"http://shop.test/checkout/cancel?order={o.id}")


@pytest.fixture
def two_types(make):
    event = make.event(title="Gala")
    adult = make.ticket(event, name="Adult", price="30.00", capacity=10)
    child = make.ticket(event, name="Child", price="12.50", capacity=10)
    return event, adult, child


def order_json(client, event, items, email="family@example.com", code=""):
    return client.post(f"/events/{event.id}/checkout", json={
        "items": [{"ticket_id": t.id, "quantity": q} for t, q in items], "email": email, "discount_code": code})


def admissions_by_type(order_id):
    rows = db.session.execute(select(Admission).where(Admission.order_id == order_id)).scalars()
    counts = {}
    for admission in rows:
        counts[admission.ticket_name] = counts.get(admission.ticket_name, 0) + 1
    return counts


def test_mixed_order_is_one_checkout_with_a_line_per_type(ctx, client, stripe_server, two_types, reload):
    event, adult, child = two_types
    response = order_json(client, event, [(adult, 2), (child, 1)])
    assert response.status_code == 201, response.get_data(as_text=True)
    order = db.session.get(TicketOrder, response.get_json()["order_id"])
    assert order.quantity == 3 and order.total_amount == Decimal("72.50") and order.ticket_id == adult.id
    assert [(i.ticket_id, i.quantity, i.unit_price) for i in order.items] == [
        (adult.id, 2, Decimal("30.00")), (child.id, 1, Decimal("12.50"))]
    session = stripe_server.sessions[order.checkout_ref]
    assert session["amount_total"] == 7250
    assert reload(adult).held_quantity == 2 and reload(child).held_quantity == 1


def test_mixed_order_paid_then_one_line_refunded(ctx, client, stripe_server, two_types, pay, reload):
    event, adult, child = two_types
    order_id = order_json(client, event, [(adult, 2), (child, 1)]).get_json()["order_id"]
    order = pay(db.session.get(TicketOrder, order_id))
    assert order.status == "paid" and admissions_by_type(order.id) == {"Adult": 2, "Child": 1}
    assert (reload(adult).sold_quantity, reload(adult).held_quantity) == (2, 0)
    assert (reload(child).sold_quantity, reload(child).held_quantity) == (1, 0)
    child_line = next(item for item in order.items if item.ticket_id == child.id)

    refund_order_line(order.id, child_line.id, "child cannot come")
    with pytest.raises(RefundAlreadyRequested):  # the same line again: no second refund, no second release
        refund_order_line(order.id, child_line.id, "asked twice")
    order = reload(order)
    assert order.status == "paid" and order.refunded_amount == Decimal("12.50")
    assert reload(child).sold_quantity == 0 and reload(adult).sold_quantity == 2
    voids = {a.ticket_name: a.void for a in order.admissions}
    assert voids == {"Adult": False, "Child": True}

    stripe_server.refund(order.payment_ref)  # the rest, in full: only the adult seats go back now
    from shop.services.fulfilment import reconcile_order
    reconcile_order(order.id, "cli")
    assert reload(order).status == "refunded"
    assert reload(adult).sold_quantity == 0 and reload(child).sold_quantity == 0


def test_expiry_releases_every_line(ctx, client, stripe_server, webhook, two_types, reload):
    event, adult, child = two_types
    order = db.session.get(TicketOrder, order_json(client, event, [(adult, 3), (child, 2)]).get_json()["order_id"])
    expired = stripe_server.expire(order.checkout_ref)
    assert webhook.post(expired).status_code == 200
    assert reload(order).status == "expired"
    assert (reload(adult).held_quantity, reload(child).held_quantity) == (0, 0)
    assert (reload(adult).remaining, reload(child).remaining) == (10, 10)


def test_all_lines_or_none_are_held(ctx, client, stripe_server, make, reload):
    event = make.event()
    plenty = make.ticket(event, name="Plenty", capacity=50)
    scarce = make.ticket(event, name="Scarce", capacity=1)
    sessions_before = len(stripe_server.sessions)
    response = order_json(client, event, [(plenty, 3), (scarce, 2)])
    assert response.status_code == 409 and "Scarce" in response.get_json()["error"]
    assert reload(plenty).held_quantity == 0 and reload(scarce).held_quantity == 0
    assert db.session.query(TicketOrder).count() == 0 and len(stripe_server.sessions) == sessions_before


@pytest.mark.parametrize("body, message", [
    ({"items": "two"}, "must be a JSON object"),
    ({"items": [{"ticket_id": "x", "quantity": 1}]}, "must be a JSON object"),
    ({"items": [{"ticket_id": 1, "quantity": -1}]}, "must be a JSON object"),
    ({"items": []}, "between 1 and"),
])
def test_bad_order_bodies_get_a_clear_400(ctx, client, two_types, body, message):
    event, adult, _ = two_types
    body = {"email": "a@example.com", **body}
    if body["items"] == []:
        body["items"] = [{"ticket_id": adult.id, "quantity": 0}]
    response = client.post(f"/events/{event.id}/checkout", json=body)
    assert response.status_code == 400 and message in response.get_json()["error"]


def test_a_type_of_another_event_is_not_found(ctx, client, two_types, make):
    event, adult, _ = two_types
    stranger = make.ticket(name="Elsewhere")
    response = order_json(client, event, [(adult, 1), (stranger, 1)])
    assert response.status_code == 404


def test_form_order_with_discount_is_one_checkout(ctx, form_client, stripe_server, two_types, make):
    event, adult, child = two_types
    make.discount("FAMILY", percent_off=20)
    response = form_client.post(f"/events/{event.id}/checkout", data={
        f"qty-{adult.id}": "2", f"qty-{child.id}": "1", "email": "Family@Example.com", "discount_code": "family"})
    assert response.status_code == 303
    order = db.session.execute(select(TicketOrder)).scalar_one()
    assert order.email == "family@example.com" and order.total_amount == Decimal("58.00")
    assert [i.discount_amount for i in order.items] == [Decimal("6.00"), Decimal("2.50")]
    names = [line["price_data"]["product_data"]["name"] for line in stripe_server.sessions[order.checkout_ref][
        "line_items"]] if "line_items" in stripe_server.sessions[order.checkout_ref] else []
    assert not names or any("6.00 off each" in name for name in names)


def test_preview_shows_the_price_after_the_code_and_holds_nothing(ctx, form_client, two_types, make, reload):
    event, adult, child = two_types
    make.discount("FAMILY", percent_off=20)
    page = form_client.post(f"/events/{event.id}/checkout", data={
        f"qty-{adult.id}": "2", f"qty-{child.id}": "1", "email": "f@example.com", "discount_code": "family",
        "preview": "1"}).get_data(as_text=True)
    assert 'id="order-preview"' in page and "58.00 USD" in page and "24.00 USD" in page and "10.00 USD" in page
    assert reload(adult).held_quantity == 0 and db.session.query(TicketOrder).count() == 0
    refused = form_client.post(f"/events/{event.id}/checkout", data={
        f"qty-{adult.id}": "1", "email": "f@example.com", "discount_code": "NOPE", "preview": "1"})
    assert refused.status_code == 400 and UNUSABLE_CODE in refused.get_data(as_text=True)


def test_free_rsvp_is_paid_at_once_without_any_stripe_call(ctx, client, stripe_server, make, reload):
    ticket = make.ticket(name="RSVP", price="0.00", capacity=5)
    calls_before = len(stripe_server.requests)
    response = order_json(client, make_event_of(ticket), [(ticket, 2)], email="guest@example.com")
    assert response.status_code == 201 and response.get_json()["checkout_url"] is None
    order = db.session.get(TicketOrder, response.get_json()["order_id"])
    assert order.status == "paid" and order.total_amount == 0 and order.checkout_ref is None
    assert admissions_by_type(order.id) == {"RSVP": 2}
    assert reload(ticket).sold_quantity == 2 and reload(ticket).held_quantity == 0
    assert db.session.execute(select(OutboxMessage).where(OutboxMessage.order_id == order.id)).scalars().all()
    assert len(stripe_server.requests) == calls_before


def make_event_of(ticket):
    return ticket.event


def test_full_discount_makes_a_free_order_through_the_per_type_route(ctx, form_client, stripe_server, make):
    ticket = make.ticket(price="15.00")
    make.discount("GUEST", percent_off=100)
    calls_before = len(stripe_server.requests)
    response = form_client.post(f"/events/{ticket.event_id}/tickets/{ticket.id}/checkout",
                                data={"quantity": "1", "email": "vip@example.com", "discount_code": "guest"})
    # Post/redirect/get: the page it lands on can be reloaded without placing the order twice.
    assert response.status_code == 303 and "/checkout/placed/" in response.headers["Location"]
    for _ in range(2):
        page = form_client.get(response.headers["Location"])
        assert page.status_code == 200 and "Paid" in page.get_data(as_text=True)
    order = db.session.execute(select(TicketOrder)).scalar_one()
    assert all(a.code in page.get_data(as_text=True) for a in order.admissions)  # the browser that placed it
    assert form_client.get("/checkout/placed/forged").status_code == 404
    assert order.status == "paid" and len(order.admissions) == 1 and order.discount_code.used_count == 1
    assert len(stripe_server.requests) == calls_before


def test_free_tickets_are_capped_per_buyer_and_event(ctx, app, client, make, monkeypatch):
    monkeypatch.setitem(app.config, "SHOP_MAX_FREE_PER_BUYER", 3)
    ticket = make.ticket(price="0.00", capacity=50)
    assert order_json(client, ticket.event, [(ticket, 2)], email="g@example.com").status_code == 201
    refused = order_json(client, ticket.event, [(ticket, 2)], email="g@example.com")
    assert refused.status_code == 400 and "limited to 3" in refused.get_json()["error"]
    assert order_json(client, ticket.event, [(ticket, 1)], email="g@example.com").status_code == 201
    assert order_json(client, ticket.event, [(ticket, 2)], email="other@example.com").status_code == 201


def test_opposite_lock_orders_never_deadlock(app, ctx, make, reload, caplog):
    """Two buyers naming the same two types in opposite orders, many times at once: every hold is taken
    (the lines are locked by ticket type id whatever order they were asked in), none gives up busy."""
    event = make.event()
    first = make.ticket(event, name="First", capacity=1000)
    second = make.ticket(event, name="Second", capacity=1000)
    ids, event_id, errors, placed = (first.id, second.id), event.id, [], []

    def buyer(n, reverse):
        with app.app_context():
            for i in range(15):
                items = ((ids[1], 1), (ids[0], 1)) if reverse else ((ids[0], 1), (ids[1], 1))
                req = CheckoutRequest(event_id=event_id, ticket_id=None, quantity=None, items=items,
                                      email=f"b{n}-{i}@example.com")
                try:
                    with app.test_request_context():
                        placed.append(start_checkout(req, URLS)[0].id)
                except Exception as exc:  # noqa: BLE001 (any refusal or error fails the test below)
                    errors.append(repr(exc))
            db.session.remove()

    threads = [threading.Thread(target=buyer, args=(n, n % 2)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and len(placed) == 90
    assert not [r for r in caplog.records if "lock conflict (1213)" in r.getMessage()], "a hold deadlocked"
    assert reload(first).held_quantity == 90 and reload(second).held_quantity == 90


def test_last_seats_across_lines_go_to_one_buyer(app, ctx, make, reload):
    event = make.event()
    a = make.ticket(event, name="A", capacity=2)
    b = make.ticket(event, name="B", capacity=2)
    results, event_id, ids = [], event.id, (a.id, b.id)

    def buyer(n):
        with app.app_context(), app.test_request_context():
            req = CheckoutRequest(event_id=event_id, ticket_id=None, quantity=None,
                                  items=((ids[n % 2], 2), (ids[1 - n % 2], 2)), email=f"r{n}@example.com")
            try:
                start_checkout(req, URLS)
                results.append("held")
            except SoldOut:
                results.append("sold out")
            db.session.remove()

    threads = [threading.Thread(target=buyer, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == ["held"] + ["sold out"] * 7
    assert (reload(a).held_quantity, reload(b).held_quantity) == (2, 2)
    assert all(t.held_quantity <= t.capacity for t in db.session.execute(select(TicketType)).scalars())


def test_names_required_before_paying_go_on_each_ticket(ctx, client, form_client, make, pay):
    event = make.event(attendee_names="required")
    adult = make.ticket(event, name="Adult", price="30.00")
    child = make.ticket(event, name="Child", price="12.50")
    nameless = order_json(client, event, [(adult, 1)])
    assert nameless.status_code == 400 and nameless.get_json()["field"] == "names"
    priced = form_client.post(f"/events/{event.id}/checkout", data={
        f"qty-{adult.id}": "2", f"qty-{child.id}": "1", "email": "f@example.com", "preview": "1"})
    page = priced.get_data(as_text=True)
    assert all(f'name="name-{t}-{n}"' in page for t, n in ((adult.id, 1), (adult.id, 2), (child.id, 1)))
    response = form_client.post(f"/events/{event.id}/checkout", data={
        f"qty-{adult.id}": "2", f"qty-{child.id}": "1", "email": "f@example.com",
        f"name-{adult.id}-1": "Ada", f"name-{adult.id}-2": "Alan", f"name-{child.id}-1": "Grace"})
    assert response.status_code == 303
    order = pay(db.session.execute(select(TicketOrder)).scalar_one())
    assert sorted((a.ticket_name, a.attendee_name) for a in order.admissions) == [
        ("Adult", "Ada"), ("Adult", "Alan"), ("Child", "Grace")]


def test_names_can_be_changed_on_the_ticket_page_until_the_event_starts(ctx, form_client, staff, make, place_order,
                                                                        pay, reload):
    event = make.event(attendee_names="optional")
    ticket = make.ticket(event, name="Seat")
    order = pay(place_order(ticket, quantity=1))
    admission = order.admissions[0]
    assert admission.attendee_name is None
    assert 'id="name-form"' in form_client.get(f"/tickets/{admission.code}").get_data(as_text=True)
    saved = form_client.post(f"/tickets/{admission.code}/name", data={"attendee_name": "Katherine Johnson"})
    assert saved.status_code == 303 and reload(admission).attendee_name == "Katherine Johnson"
    assert "Katherine Johnson" in form_client.get(f"/tickets/{admission.code}").get_data(as_text=True)
    too_long = form_client.post(f"/tickets/{admission.code}/name", data={"attendee_name": "x" * 121})
    assert too_long.status_code == 400 and reload(admission).attendee_name == "Katherine Johnson"

    staff.login("admin")
    scan = form_client.post(f"/console/events/{event.id}/checkin", json={"code": admission.code}).get_json()
    assert scan["attendee_name"] == "Katherine Johnson"
    export = form_client.get(f"/console/events/{event.id}/attendees.csv").get_data(as_text=True)
    assert export.splitlines()[0].endswith(",attendee_name") and "Katherine Johnson" in export

    event.starts_at = event.starts_at.replace(year=2000)
    db.session.commit()
    late = form_client.post(f"/tickets/{admission.code}/name", data={"attendee_name": "Someone Else"})
    assert late.status_code == 400 and reload(admission).attendee_name == "Katherine Johnson"


def test_organizer_chooses_names_in_the_console_and_the_cli(app, ctx, form_client, staff, make, reload):
    staff.login("admin")
    event = make.event(title="Names Night")
    saved = form_client.post(f"/console/events/{event.id}/edit", data={
        "title": "Names Night", "venue": "Hall", "starts_at": "2099-05-01T19:30", "timezone": "UTC",
        "description": "", "attendee_names": "required"})
    assert saved.status_code == 302 and reload(event).attendee_names == "required"
    edited = app.test_cli_runner().invoke(args=["shop", "edit-event", str(event.id), "--attendee-names", "optional"])
    assert edited.exit_code == 0 and reload(event).attendee_names == "optional"
    refused = app.test_cli_runner().invoke(args=["shop", "edit-event", str(event.id), "--attendee-names", "some"])
    assert refused.exit_code != 0 and reload(event).attendee_names == "optional"


def test_names_are_given_after_paying_from_the_order_page(ctx, form_client, auth, make, place_order, pay, reload):
    buyer = make.user(email="parent@example.com")
    event = make.event(attendee_names="optional")
    order = pay(place_order(make.ticket(event, name="Seat"), quantity=2, email=buyer.email, user=buyer))
    auth.login(buyer)
    page = form_client.get(f"/orders/{order.id}").get_data(as_text=True)
    first, second = order.admissions
    assert all(f'action="/tickets/{a.code}/name"' in page for a in (first, second))

    saved = form_client.post(f"/tickets/{second.code}/name", data={"attendee_name": "Grace", "return_to": "order"})

    assert saved.status_code == 303 and saved.headers["Location"].endswith(f"/orders/{order.id}")
    assert (reload(first).attendee_name, reload(second).attendee_name) == (None, "Grace")
    assert 'value="Grace"' in form_client.get(f"/orders/{order.id}").get_data(as_text=True)
    event.starts_at = event.starts_at.replace(year=2000)
    db.session.commit()
    assert "Names on the tickets" not in form_client.get(f"/orders/{order.id}").get_data(as_text=True)


def test_staff_refund_one_line_from_the_console(ctx, client, form_client, staff, two_types, pay, reload):
    event, adult, child = two_types
    order = pay(db.session.get(TicketOrder, order_json(client, event, [(adult, 2), (child, 1)]).get_json()["order_id"]))
    child_line = next(item for item in order.items if item.ticket_id == child.id)
    staff.login("admin")
    page = form_client.get(f"/console/orders/{order.id}").get_data(as_text=True)
    assert f"/console/orders/{order.id}/lines/{child_line.id}/refund" in page

    for _ in range(2):  # a double click refunds once
        answer = form_client.post(f"/console/orders/{order.id}/lines/{child_line.id}/refund")
        assert answer.status_code == 303
    order = reload(order)
    assert order.status == "paid" and order.refunded_amount == Decimal("12.50")
    assert {a.ticket_name: a.void for a in order.admissions} == {"Adult": False, "Child": True}
    assert reload(child).sold_quantity == 0 and reload(adult).sold_quantity == 2


def test_a_free_order_is_cancelled_like_a_refund_without_any_provider(ctx, client, stripe_server, make, reload):
    ticket = make.ticket(name="RSVP", price="0.00", capacity=5)
    order = db.session.get(TicketOrder, order_json(client, ticket.event, [(ticket, 2)]).get_json()["order_id"])
    calls_before = len(stripe_server.requests)

    outcome = refund_order(order.id, "cannot come", "console")

    order = reload(order)
    assert outcome.status is OrderStatus.REFUNDED and order.status == "refunded"
    assert all(a.void for a in order.admissions) and reload(ticket).sold_quantity == 0
    kinds = db.session.execute(select(OutboxMessage.kind).where(OutboxMessage.order_id == order.id)).scalars().all()
    assert len(kinds) == 2  # the confirmation, then the notice that the tickets are void
    assert len(stripe_server.requests) == calls_before
