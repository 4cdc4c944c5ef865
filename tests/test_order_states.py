"""Payment outcomes, late payments, refunds and discounts: every path through the order state machine."""
import threading
from datetime import timedelta
from decimal import Decimal
from types import SimpleNamespace

import pytest
from sqlalchemy import update

from shop.extensions import db
from shop.models import Admission, DiscountCode, TicketOrder, TicketType
from shop.models.base import utcnow
from shop.services.checkout import UNUSABLE_CODE, CheckoutRefused, SoldOut
from shop.services.fulfilment import LATE_PAYMENT_REFUND_REASON
from shop.services.sweeper import sweep


def deliver(webhook, *events):
    """POST each event to the webhook route; each must be answered 200. Returns the outcomes."""
    outcomes = []
    for event in events:
        response = webhook.post(event)
        assert response.status_code == 200, response.get_data(as_text=True)
        outcomes.append(response.json["outcome"])
    return outcomes




def test_delayed_payment_keeps_seats_held_while_processing_then_pays(place_order, stripe_server, make, reload, webhook):
    ticket = make.ticket(capacity=5)
    order = place_order(ticket, quantity=2)
    completed = stripe_server.complete(order.checkout_ref, payment_status="unpaid")
    deliver(webhook, completed, completed)
    assert reload(order).status == "processing" and reload(ticket).held_quantity == 2

    succeeded = stripe_server.async_succeed(order.checkout_ref)
    deliver(webhook, succeeded, succeeded)
    assert reload(order).status == "paid"
    assert (reload(ticket).held_quantity, reload(ticket).sold_quantity) == (0, 2)


def test_failed_delayed_payment_releases_the_seats(place_order, stripe_server, make, reload, webhook):
    ticket = make.ticket(capacity=5)
    order = place_order(ticket, quantity=2)
    completed = stripe_server.complete(order.checkout_ref, payment_status="unpaid")
    failed = stripe_server.async_fail(order.checkout_ref)
    # Delivered in the wrong order and twice: Stripe's session and intent decide.
    deliver(webhook, failed, completed, failed)
    assert reload(order).status == "failed"
    assert (reload(ticket).held_quantity, reload(ticket).sold_quantity) == (0, 0)


def test_async_success_before_completed_event_still_ends_paid(place_order, stripe_server, make, reload, webhook):
    ticket = make.ticket()
    order = place_order(ticket)
    completed = stripe_server.complete(order.checkout_ref, payment_status="unpaid")
    succeeded = stripe_server.async_succeed(order.checkout_ref)
    deliver(webhook, succeeded, completed)
    assert reload(order).status == "paid" and reload(ticket).sold_quantity == 1


def test_expired_session_releases_the_hold(place_order, stripe_server, make, reload, webhook):
    ticket = make.ticket(capacity=3)
    order = place_order(ticket, quantity=3)
    expired = stripe_server.expire(order.checkout_ref)
    deliver(webhook, expired, expired)
    assert reload(order).status == "expired" and reload(ticket).remaining == 3


def test_expiry_arriving_after_payment_changes_nothing(place_order, stripe_server, make, reload, webhook):
    ticket = make.ticket()
    order = place_order(ticket, quantity=2)
    completed = stripe_server.complete(order.checkout_ref)
    stale_expiry = stripe_server.event(
        "checkout.session.expired", {**stripe_server.sessions[order.checkout_ref], "status": "expired"})
    deliver(webhook, completed, stale_expiry)
    assert reload(order).status == "paid" and reload(ticket).sold_quantity == 2




def resell_after_hold_ends(order, place_order, webhook, stripe_server, holds):
    """The order's hold ends unpaid and is released, and another buyer pays for all its seats."""
    holds.release_unconfirmed(order)
    rival = place_order(order.ticket, quantity=order.quantity, email="rival@example.com")
    deliver(webhook, stripe_server.complete(rival.checkout_ref))


def test_late_payment_with_seats_left_is_accepted(place_order, stripe_server, make, reload, webhook, holds):
    ticket = make.ticket(capacity=5)
    order = place_order(ticket, quantity=2)
    holds.release_unconfirmed(order)
    assert reload(order).status == "expired"

    deliver(webhook, stripe_server.complete(order.checkout_ref))

    assert reload(order).status == "paid" and reload(ticket).sold_quantity == 2 and reload(ticket).held_quantity == 0


def test_late_payment_for_a_sold_out_ticket_is_refunded_and_flagged(
        place_order, client, stripe_server, make, reload, webhook, holds):
    ticket = make.ticket(capacity=2)
    late = place_order(ticket, quantity=2)
    resell_after_hold_ends(late, place_order, webhook, stripe_server, holds)

    outcome = deliver(webhook, stripe_server.complete(late.checkout_ref))

    late = reload(late)
    assert outcome == ["applied: late_payment_refunded"]
    assert late.status == "refunded" and late.needs_attention
    assert late.attention_reason.startswith(LATE_PAYMENT_REFUND_REASON) and "seats" in late.attention_reason
    refund = next(r for r in stripe_server.refunds.values() if r["payment_intent"] == late.payment_ref)
    assert refund["amount"] == int(late.total_amount * 100)
    assert reload(ticket).sold_quantity == 2 and db.session.query(Admission).filter_by(order_id=late.id).count() == 0
    assert "order %d" % late.id in app_cli(client, "attention")


def app_cli(client, *args):
    return client.application.test_cli_runner().invoke(args=["shop", *args]).output


def test_refund_returns_capacity_voids_tickets_and_discount_use(place_order, stripe_server, make, reload, webhook):
    ticket = make.ticket(capacity=4)
    code = make.discount("HALF", percent_off=50)
    order = place_order(ticket, quantity=4, discount_code="half")
    deliver(webhook, stripe_server.complete(order.checkout_ref))
    assert reload(code).used_count == 1

    intent = reload(order).payment_ref
    refunded = stripe_server.refund(intent)
    deliver(webhook, refunded, refunded)

    assert reload(order).status == "refunded" and reload(order).refunded_amount == reload(order).total_amount
    assert reload(ticket).sold_quantity == 0 and reload(ticket).remaining == 4
    assert reload(code).used_count == 0
    assert all(a.void for a in db.session.query(Admission).filter_by(order_id=order.id))


def test_partial_refund_is_recorded_and_tickets_stay_valid(place_order, stripe_server, make, reload, webhook):
    ticket = make.ticket(price="20.00")
    order = place_order(ticket, quantity=2)
    deliver(webhook, stripe_server.complete(order.checkout_ref))
    outcome = deliver(webhook, stripe_server.refund(reload(order).payment_ref, amount=1500))
    order = reload(order)
    assert outcome == ["applied: partial_refund"]
    assert order.status == "paid" and order.refunded_amount == Decimal("15.00") and order.partially_refunded
    assert not any(a.void for a in order.admissions) and reload(ticket).sold_quantity == 2


def test_refund_event_before_completed_event_ends_refunded(place_order, stripe_server, make, reload, webhook):
    ticket = make.ticket()
    order = place_order(ticket, quantity=3)
    completed = stripe_server.complete(order.checkout_ref)
    refunded = stripe_server.refund(stripe_server.sessions[order.checkout_ref]["payment_intent"])
    deliver(webhook, refunded, completed, refunded)
    assert reload(order).status == "refunded"
    assert (reload(ticket).sold_quantity, reload(ticket).held_quantity) == (0, 0)


def test_refund_command_refunds_through_stripe_once(place_order, client, stripe_server, make, reload, webhook):
    ticket = make.ticket()
    order = place_order(ticket, quantity=2)
    deliver(webhook, stripe_server.complete(order.checkout_ref))
    first = app_cli(client, "refund", str(order.id))
    second = app_cli(client, "refund", str(order.id))
    assert "refunded" in first and "only paid orders" in second
    assert reload(order).status == "refunded" and reload(ticket).sold_quantity == 0
    intent = reload(order).payment_ref
    refunds = [r for r in stripe_server.requests
               if r.method == "POST" and r.path == "/v1/refunds" and r.params.get("payment_intent") == intent]
    assert len(refunds) == 1 and refunds[0].headers["Idempotency-Key"] == f"refund-order-{order.id}"


def test_sweeper_pays_an_order_whose_event_never_arrived(place_order, stripe_server, make, reload):
    order = place_order(make.ticket())
    stripe_server.complete(order.checkout_ref)
    db.session.execute(update(TicketOrder).where(TicketOrder.id == order.id)
                       .values(created_at=utcnow() - timedelta(minutes=6)))
    db.session.commit()
    assert sweep() == {"paid": 1}
    assert reload(order).status == "paid"


def test_sweeper_expires_the_open_session_of_an_ended_hold(place_order, stripe_server, make, reload, holds):
    ticket = make.ticket(capacity=1)
    order = place_order(ticket)
    holds.end(order)
    sweep()
    assert stripe_server.sessions[order.checkout_ref]["status"] == "expired"
    assert reload(order).status == "expired" and reload(ticket).remaining == 1


def test_an_ended_hold_is_released_by_the_sweeper_once_stripe_confirms_never_by_a_checkout(
        place_order, stripe_server, make, reload, holds):
    ticket = make.ticket(capacity=1)
    first = place_order(ticket)
    holds.end(first)
    with pytest.raises(SoldOut):
        place_order(ticket, email="next@example.com")  # the database's word alone frees nothing
    assert stripe_server.sessions[first.checkout_ref]["status"] == "open" and reload(first).status == "pending"

    sweep()

    assert stripe_server.sessions[first.checkout_ref]["status"] == "expired" and reload(first).status == "expired"
    assert place_order(ticket, email="next@example.com").status == "pending"


def test_discount_max_uses_is_never_exceeded_under_concurrency(place_order, app, ctx, make, reload):
    # Plain ids: a row object of the test's session must not be touched from other threads.
    row = make.ticket(capacity=100)
    ticket = SimpleNamespace(id=row.id, event_id=row.event_id)
    code = make.discount("FEW", percent_off=20, max_uses=5)
    barrier = threading.Barrier(20)
    results = []

    def buy(i):
        with app.app_context():
            barrier.wait()
            try:
                place_order(ticket, email=f"b{i}@example.com", discount_code="few")
                results.append("held")
            except CheckoutRefused as refused:
                results.append("used up" if refused.message == UNUSABLE_CODE else refused.message)
            except Exception as exc:  # recorded so the assertion shows it
                results.append(repr(exc))
            db.session.remove()

    threads = [threading.Thread(target=buy, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count("held") == 5 and results.count("used up") == 15
    assert reload(code).reserved_count == 5
    assert db.session.query(TicketOrder).filter(TicketOrder.discount_code_id == code.id).count() == 5


def test_discount_holds_count_against_max_uses_and_come_back_on_expiry(
        place_order, stripe_server, make, reload, webhook):
    ticket = make.ticket()
    make.discount("ONCE", amount_off=Decimal("5.00"), max_uses=1)
    order = place_order(ticket, discount_code="once")
    with pytest.raises(CheckoutRefused, match=UNUSABLE_CODE):
        place_order(ticket, discount_code="ONCE")
    deliver(webhook, stripe_server.expire(order.checkout_ref))
    assert place_order(ticket, discount_code="Once").status == "pending"
    assert reload(db.session.query(DiscountCode).one()).reserved_count == 1


def test_late_delayed_payment_for_resold_seats_is_flagged_then_refunded_when_it_succeeds(
        place_order, stripe_server, make, reload, webhook, holds):
    ticket = make.ticket(capacity=1)
    late = place_order(ticket)
    resell_after_hold_ends(late, place_order, webhook, stripe_server, holds)

    # A bank debit under way cannot be refunded yet: the order is flagged, nothing fails.
    outcome = deliver(webhook, stripe_server.complete(late.checkout_ref, payment_status="unpaid"))
    assert outcome == ["unchanged: awaiting_delayed_payment"]
    assert reload(late).status == "expired" and reload(late).needs_attention

    deliver(webhook, stripe_server.async_succeed(late.checkout_ref))
    assert reload(late).status == "refunded" and reload(ticket).sold_quantity == 1


def test_a_refused_automatic_refund_is_flagged_not_retried_forever(
        place_order, stripe_server, make, reload, webhook, holds):
    ticket = make.ticket(capacity=1)
    late = place_order(ticket)
    resell_after_hold_ends(late, place_order, webhook, stripe_server, holds)
    completed = stripe_server.complete(late.checkout_ref)
    intent_id = stripe_server.sessions[late.checkout_ref]["payment_intent"]
    stripe_server.payment_intents[intent_id]["status"] = "requires_capture"  # so Stripe refuses to refund it

    assert deliver(webhook, completed) == ["flagged: refund_failed"]
    late = reload(late)
    assert late.status == "expired" and "automatic refund failed" in late.attention_reason


def test_stripe_showing_a_payment_for_a_refunded_order_flags_it(place_order, stripe_server, make, reload, webhook):
    order = place_order(make.ticket())
    deliver(webhook, stripe_server.complete(order.checkout_ref))
    deliver(webhook, stripe_server.refund(reload(order).payment_ref))
    # The refund failed at the bank afterwards: Stripe's charge is no longer refunded.
    charge_id = stripe_server.payment_intents[reload(order).payment_ref]["latest_charge"]
    stripe_server.charges[charge_id].update(amount_refunded=0, refunded=False)
    deliver(webhook, stripe_server.event("charge.refund.updated", stripe_server.charges[charge_id]))
    order = reload(order)
    assert order.status == "refunded" and order.needs_attention and "the provider says paid" in order.attention_reason


def test_sweeper_settles_other_orders_past_one_it_cannot(place_order, stripe_server, make, reload):
    stuck = place_order(make.ticket())
    paid_unseen = place_order(make.ticket())
    stripe_server.complete(paid_unseen.checkout_ref)
    stripe_server.sessions.pop(stuck.checkout_ref)  # Stripe no longer shows this one
    db.session.execute(update(TicketOrder).values(created_at=utcnow() - timedelta(minutes=6)))
    db.session.commit()

    counts = sweep()

    assert counts.get("paid") == 1 and reload(paid_unseen).status == "paid"
    assert reload(stuck).status == "pending"


def test_an_order_is_swept_by_one_sweeper_at_a_time(place_order, stripe_server, make):
    place_order(make.ticket())
    db.session.execute(update(TicketOrder).values(created_at=utcnow() - timedelta(minutes=6)))
    db.session.commit()
    assert sweep() == {"unchanged: still_open": 1}
    assert sweep() == {}  # claimed a moment ago: another sweep leaves it alone


def test_orders_from_before_holds_existed_are_settled_without_touching_held_seats(
        place_order, stripe_server, make, reload):
    ticket = make.ticket(capacity=5)
    order = place_order(ticket, quantity=2)
    # As the old system wrote it: no hold, so its seats were never counted as held.
    db.session.execute(update(TicketOrder).where(TicketOrder.id == order.id).values(
        hold_expires_at=None, created_at=utcnow() - timedelta(days=1)))
    db.session.execute(update(TicketType).where(TicketType.id == ticket.id).values(held_quantity=0))
    db.session.commit()
    stripe_server.complete(order.checkout_ref)

    assert sweep() == {"paid": 1}
    assert (reload(ticket).sold_quantity, reload(ticket).held_quantity) == (2, 0)
