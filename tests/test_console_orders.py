"""Orders in the console: search, the timeline the state machine writes, refunds in full and in part, voids."""
import re
from datetime import timedelta
from decimal import Decimal

import pytest

from shop.extensions import db
from shop.models import Admission, AuditEntry, OrderHistory, RefundRequest
from shop.models.base import utcnow
from shop.services.audit import Actor
from shop.services.refunds import RefundAlreadyRequested, RefundNotPossible, refund_order
from shop.services.sweeper import sweep

REQUEST_KEY = re.compile(r'name="request_key" type="hidden" value="([0-9a-f]+)"')


def refunds_of(stripe_server, order):
    return [r for r in stripe_server.refunds.values() if r["payment_intent"] == order.payment_ref]


@pytest.fixture
def admin(staff):
    return staff.login("admin")


@pytest.fixture
def paid(make, place_order, pay):
    """A paid order of 2 × 20.00."""
    return pay(place_order(make.ticket(price="20.00", capacity=10), quantity=2, email="Ada@Example.com"))


def test_change_status_writes_the_timeline_with_the_event_and_the_path(paid, ctx):
    lines = db.session.query(OrderHistory).filter_by(order_id=paid.id).all()

    assert [(h.from_status, h.to_status, h.source) for h in lines] == [("pending", "paid", "webhook")]
    assert lines[0].cause.startswith("checkout.session.completed evt_") and lines[0].cause.endswith("via webhook")


def test_the_sweeper_is_named_in_the_timeline(make, place_order, holds, ctx):
    order = place_order(make.ticket())
    holds.end(order)

    sweep()

    line = db.session.query(OrderHistory).filter_by(order_id=order.id).one()
    assert (line.from_status, line.to_status, line.source) == ("pending", "expired", "sweeper")
    assert line.cause == "sweeper re-read the checkout"


@pytest.mark.parametrize("query", ["ada@example.com", "ada@", "#{id}", "{id}", "{code}", "{payment_ref}"])
def test_search_finds_an_order_by_email_number_ticket_code_or_payment(form_client, admin, paid, make,
                                                                      place_order, query):
    other = place_order(make.ticket(), email="someone@else.org")
    text = query.format(id=paid.id, code=paid.admissions[0].code.lower(), payment_ref=paid.payment_ref)

    html = form_client.get("/console/orders", query_string={"q": text}).get_data(as_text=True)

    assert f'id="order-{paid.id}"' in html and f'id="order-{other.id}"' not in html


def test_the_order_page_shows_tickets_timeline_and_staff_actions(form_client, admin, paid, ctx):
    html = form_client.get(f"/console/orders/{paid.id}").get_data(as_text=True)

    assert all(a.code in html for a in paid.admissions)
    assert "pending → <strong>paid</strong>" in html and "via webhook" in html
    assert "Resend tickets" in html and 'id="refund"' in html


def test_a_full_refund_from_the_console_uses_the_clis_key(form_client, admin, paid, stripe_server, reload, ctx):
    page = form_client.get(f"/console/orders/{paid.id}").get_data(as_text=True)

    response = form_client.post(f"/console/orders/{paid.id}/refund", data={
        "amount": "", "reason": "cancelled gig", "request_key": REQUEST_KEY.search(page).group(1)})

    assert response.status_code == 303
    create = [r for r in stripe_server.requests if r.method == "POST" and r.path == "/v1/refunds"
              and r.params.get("payment_intent") == paid.payment_ref]
    assert [r.headers.get("Idempotency-Key") for r in create] == [f"refund-order-{paid.id}"]
    order = reload(paid)
    assert order.status == "refunded" and all(a.void for a in order.admissions)
    last = db.session.query(OrderHistory).filter_by(order_id=paid.id).order_by(OrderHistory.id.desc()).first()
    assert (last.to_status, last.source, last.actor_id) == ("refunded", "console", admin.id)
    assert last.cause == f"refund requested by {admin.email} via console"


def test_a_partial_refund_keeps_the_order_paid_and_its_tickets_valid(form_client, admin, paid, stripe_server,
                                                                     reload, ctx):
    page = form_client.get(f"/console/orders/{paid.id}").get_data(as_text=True)

    response = form_client.post(f"/console/orders/{paid.id}/refund", data={
        "amount": "15.00", "reason": "no view", "request_key": REQUEST_KEY.search(page).group(1)})

    assert response.status_code == 303
    assert [r["amount"] for r in refunds_of(stripe_server, paid)] == [1500]
    order = reload(paid)
    assert (order.status, order.refunded_amount) == ("paid", Decimal("15.00"))
    assert not any(a.void for a in order.admissions)
    assert reload(order.ticket).sold_quantity == 2
    partial = db.session.query(OrderHistory).filter_by(order_id=paid.id, to_status="paid", from_status="paid").one()
    assert partial.cause.startswith("partial refund, 15.00 refunded in all") and partial.actor_id == admin.id


def test_a_double_click_refunds_once_and_two_deliberate_refunds_twice(form_client, admin, paid, stripe_server,
                                                                      reload, ctx):
    url = f"/console/orders/{paid.id}/refund"
    first_page = form_client.get(f"/console/orders/{paid.id}").get_data(as_text=True)
    first_key = REQUEST_KEY.search(first_page).group(1)

    clicks = [form_client.post(url, data={"amount": "5.00", "request_key": first_key}) for _ in range(2)]
    second_key = REQUEST_KEY.search(form_client.get(f"/console/orders/{paid.id}").get_data(as_text=True)).group(1)
    again = form_client.post(url, data={"amount": "5.00", "request_key": second_key})

    assert [c.status_code for c in clicks] == [303, 409] and again.status_code == 303
    assert "this refund was requested already" in clicks[1].get_data(as_text=True)
    assert second_key != first_key
    assert sorted(r["amount"] for r in refunds_of(stripe_server, paid)) == [500, 500]
    assert reload(paid).refunded_amount == Decimal("10.00")
    keys = {r.idempotency_key for r in db.session.query(RefundRequest)}
    assert keys == {f"refund-order-{paid.id}-{first_key}", f"refund-order-{paid.id}-{second_key}"}


def test_a_partial_refund_can_void_the_chosen_tickets(form_client, admin, paid, reload, ctx):
    page = form_client.get(f"/console/orders/{paid.id}").get_data(as_text=True)
    chosen, kept = paid.admissions

    form_client.post(f"/console/orders/{paid.id}/refund", data={
        "amount": "20.00", "request_key": REQUEST_KEY.search(page).group(1), "void_tickets": [str(chosen.id)]})

    assert reload(chosen).void and not reload(kept).void
    assert reload(paid).status == "paid"
    notes = [e.note for e in db.session.query(AuditEntry).filter_by(target_id=str(paid.id)).order_by(AuditEntry.id)]
    assert notes == ["refunded by the organizer", f"ticket {chosen.code} voided: refunded in part"]


def test_refusals_are_said_on_the_page_not_a_500(form_client, admin, paid, ctx, stripe_server):
    page = form_client.get(f"/console/orders/{paid.id}").get_data(as_text=True)
    key = REQUEST_KEY.search(page).group(1)

    too_much = form_client.post(f"/console/orders/{paid.id}/refund", data={"amount": "99.00", "request_key": key})
    nonsense = form_client.post(f"/console/orders/{paid.id}/refund", data={"amount": "lots", "request_key": key})

    assert too_much.status_code == 409 and "between 0.01 and the 40.00 not yet refunded" in too_much.get_data(
        as_text=True)
    assert nonsense.status_code == 409 and "is not an amount like 5.00" in nonsense.get_data(as_text=True)
    assert refunds_of(stripe_server, paid) == []


def test_a_refused_provider_leaves_the_request_free_to_try_again(paid, stripe_server, reload, ctx):
    stripe_server.fail_next(1, 400)
    actor = Actor(None, "cli")

    with pytest.raises(Exception):  # noqa: B017 (PaymentRefused; its message is Stripe's)
        refund_order(paid.id, "try", amount="5.00", request_key="k1", actor=actor)
    assert db.session.query(RefundRequest).count() == 0

    refund_order(paid.id, "try", amount="5.00", request_key="k1", actor=actor)
    with pytest.raises(RefundAlreadyRequested):
        refund_order(paid.id, "try", amount="5.00", request_key="k1", actor=actor)
    assert reload(paid).refunded_amount == Decimal("5.00")


def test_a_partial_refund_needs_a_request_key(paid, ctx):
    with pytest.raises(RefundNotPossible, match="request key"):
        refund_order(paid.id, "x", amount="5.00")


def test_void_one_ticket(form_client, admin, paid, reload, ctx):
    admission = paid.admissions[0]

    first = form_client.post(f"/console/orders/{paid.id}/tickets/{admission.id}/void")
    again = form_client.post(f"/console/orders/{paid.id}/tickets/{admission.id}/void", follow_redirects=True)

    assert first.status_code == 303 and reload(admission).void
    assert "was void already" in again.get_data(as_text=True)
    assert not reload(paid.admissions[1]).void and reload(paid).status == "paid"
    assert db.session.query(AuditEntry).filter_by(action="admission.void").count() == 1


def test_void_of_another_orders_ticket_changes_nothing(form_client, admin, paid, make, place_order, pay, reload,
                                                       ctx):
    other = pay(place_order(make.ticket()))

    form_client.post(f"/console/orders/{paid.id}/tickets/{other.admissions[0].id}/void")

    assert not reload(other.admissions[0]).void


def test_resolving_an_attention_item_takes_it_off_the_list(form_client, admin, make, place_order, reload, ctx):
    order = place_order(make.ticket())
    order.needs_attention, order.attention_reason = True, "amount mismatch"
    db.session.commit()
    assert f'id="attention-{order.id}"' in form_client.get("/console/").get_data(as_text=True)

    response = form_client.post(f"/console/orders/{order.id}/resolve", data={"note": "refunded by hand"})

    assert response.status_code == 303 and not reload(order).needs_attention
    assert f'id="attention-{order.id}"' not in form_client.get("/console/").get_data(as_text=True)
    entry = db.session.query(AuditEntry).filter_by(action="attention.resolve").one()
    assert (entry.note, entry.before) == ("refunded by hand (it was: amount mismatch)", '{"needs_attention": true}')


def test_the_dashboard_counts_seats_money_and_check_ins(form_client, admin, make, place_order, pay, stripe_server,
                                                        ctx):
    ticket = make.ticket(make.event(title="Counted"), name="Floor", price="10.00", capacity=50)
    paid = pay(place_order(ticket, quantity=3))
    place_order(ticket, quantity=2)
    refund_order(paid.id, "x", amount="4.00", request_key="a1")
    db.session.execute(Admission.__table__.update().where(Admission.id == paid.admissions[0].id)
                       .values(checked_in_at=utcnow()))
    db.session.commit()

    html = form_client.get("/console/").get_data(as_text=True)

    row = re.search(rf'id="ticket-type-{ticket.id}">(.*?)</tr>', html, re.S).group(1)
    cells = re.findall(r'<td class="num">([^<]*)</td>', row)
    assert cells == ["50", "3", "2", "1", "30.00 USD", "4.00 USD", "26.00 USD"]
    assert "<svg" in html and 'class="bar"' in html
    assert "pending past checkout expiry" in html


def test_the_event_page_chart_counts_each_day(form_client, admin, make, place_order, pay, ctx):
    ticket = make.ticket()
    order = pay(place_order(ticket, quantity=4))
    order.paid_at = utcnow() - timedelta(days=2)
    db.session.commit()
    pay(place_order(ticket, quantity=1))

    html = form_client.get(f"/console/events/{ticket.event_id}").get_data(as_text=True)

    titles = re.findall(r"<rect[^>]*><title>([^<]*)</title>", html)
    assert [t.split(": ")[1] for t in titles] == ["4 sold", "1 sold"]
    assert 'aria-label="Tickets sold per day: 5 tickets in 3 days"' in html
