"""Property: whatever Stripe did, and however its events arrive (duplicated, shuffled, interleaved),
each order ends in the state Stripe's final objects imply, and the seat counters add up."""
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from shop.extensions import db
from shop.models import TicketOrder, TicketType
from shop.models.orders import OrderStatus
from shop.payments.stripe.provider import payment_state, provider_event
from shop.services.event_log import receive_event

# What happened at Stripe to one checkout, as the list of Stripe actions that produce events.
HISTORIES = {
    "open": [],
    "paid": [("complete", "paid")],
    "processing": [("complete", "unpaid")],
    "async paid": [("complete", "unpaid"), ("async_succeed",)],
    "async failed": [("complete", "unpaid"), ("async_fail",)],
    "expired": [("expire",)],
    "paid then refunded": [("complete", "paid"), ("refund", None)],
    "paid then partly refunded": [("complete", "paid"), ("refund", 100)],
}

checkouts = st.lists(st.tuples(st.sampled_from(sorted(HISTORIES)), st.integers(1, 4)), min_size=1, max_size=3)


def run_history(stripe_server, order, history):
    events = []
    for action, *args in HISTORIES[history]:
        session_id = order.checkout_ref
        if action == "complete":
            events.append(stripe_server.complete(session_id, payment_status=args[0]))
        elif action == "refund":
            events.append(stripe_server.refund(stripe_server.sessions[session_id]["payment_intent"], amount=args[0]))
        else:
            events.append(getattr(stripe_server, action)(session_id))
    return events


@pytest.mark.slow
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plan=checkouts, data=st.data())
def test_any_event_sequence_ends_where_stripe_says(ctx, stripe_server, make, place_order, plan, data):
    ticket = make.ticket(capacity=20)
    orders = [place_order(ticket, quantity=quantity) for _, quantity in plan]
    events = [e for order, (history, _) in zip(orders, plan, strict=True)
              for e in run_history(stripe_server, order, history)]
    duplicates = data.draw(st.lists(st.sampled_from(events), max_size=4)) if events else []
    deliveries = data.draw(st.permutations(events + duplicates))

    for event in deliveries:
        receive_event(provider_event(event), "webhook")

    db.session.rollback()
    for order, (history, _) in zip(orders, plan, strict=True):
        order = db.session.get(TicketOrder, order.id, populate_existing=True)
        truth = payment_state(stripe_server.sessions[order.checkout_ref] | {
            "payment_intent": _expanded_intent(stripe_server, order.checkout_ref)})
        assert order.status == (truth.status or OrderStatus.PENDING).value, history
    ticket = db.session.get(TicketType, ticket.id, populate_existing=True)
    assert ticket.sold_quantity == _sum_quantity(ticket.id, [OrderStatus.PAID])
    assert ticket.held_quantity == _sum_quantity(ticket.id, [OrderStatus.PENDING, OrderStatus.PROCESSING])


def _expanded_intent(stripe_server, session_id):
    intent_id = stripe_server.sessions[session_id]["payment_intent"]
    if not intent_id:
        return None
    intent = dict(stripe_server.payment_intents[intent_id])
    if intent.get("latest_charge"):
        intent["latest_charge"] = stripe_server.charges[intent["latest_charge"]]
    return intent


def _sum_quantity(ticket_id, states):
    return db.session.execute(
        select(func.coalesce(func.sum(TicketOrder.quantity), 0))
        .where(TicketOrder.ticket_id == ticket_id, TicketOrder.status.in_([s.value for s in states]))).scalar_one()
