"""Fulfilment: where an order becomes paid (or processing, failed, expired, cancelled, refunded).

Every inlet ends here, naming itself as ``path``: the event log (webhook, eventbridge),
the success page and the sandbox's pay button (``fulfil_checkout``), the cancel page, the
sweeper and refunds (``reconcile_order``).

News is only a trigger (pretix's habit): the provider's checkout is re-read, and the order
is moved to what the provider's :class:`~shop.payments.PaymentState` says is true, under
the order's row lock. That makes fulfilment idempotent and independent of the order in
which news arrives. It never reads a provider's field names.
"""
import hmac
import logging
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.exc import DBAPIError

from ..extensions import db
from ..models import DeliveryPath, Outcome, OutcomeKind, OutcomeReason, TicketOrder
from ..models.base import utcnow
from ..models.orders import OrderStatus
from ..payments import PaymentNotFound, gateway, order_token
from .mail import notify_status_change
from .orders import LimitReached, TransitionRefused, change_status, flag_for_attention, lock_order, record_history
from .transactions import transaction

logger = logging.getLogger(__name__)

LATE_PAYMENT_REFUND_REASON = "paid after the hold ended, past a limit"

_RELEASED = (OrderStatus.PENDING, OrderStatus.EXPIRED)


def fulfil_checkout(checkout_ref, path):
    """Bring the order behind ``checkout_ref`` in line with the provider; returns the :class:`Outcome`.

    The success page calls this (Stripe's advice: fulfil on the landing page too, so the
    buyer need not wait for the event), and so does the sandbox's pay button.
    """
    try:
        state = gateway().read_checkout(checkout_ref)
    except PaymentNotFound:
        return Outcome(OutcomeKind.IGNORED, OutcomeReason.NOT_OURS)
    note_delivery(path)
    outcome, order_id = apply_payment_state(state, path, cause=f"checkout read via {path}")
    logger.info("checkout read via %s: order %s %s", path, order_id, outcome)
    return outcome


def reconcile_order(order_id, path, *, cancelled=False, refund_over_limit=True, cause=None, actor_id=None):
    """Re-read an order's checkout from the provider and apply it; returns the :class:`Outcome`.

    ``cancelled`` records an expiry as the buyer's cancel. ``cause`` and ``actor_id`` say who
    asked (a staff member's refund) in the order's history. Raises PaymentUnavailable when
    the provider cannot answer: nothing is concluded then.
    """
    with transaction():
        checkout_ref = db.session.execute(
            select(TicketOrder.checkout_ref).where(TicketOrder.id == order_id)).scalar_one_or_none()
    if checkout_ref is None:
        return Outcome(OutcomeKind.IGNORED, OutcomeReason.NO_REFERENCE)
    try:
        state = gateway().read_checkout(checkout_ref)
    except PaymentNotFound:
        return Outcome(OutcomeKind.IGNORED, OutcomeReason.NOT_OURS, detail="the provider has no such checkout")
    outcome, _ = apply_payment_state(state, path, cause=cause or f"{path} re-read the checkout", cancelled=cancelled,
                                     refund_over_limit=refund_over_limit, actor_id=actor_id)
    return outcome


def apply_payment_state(state, path, cause, *, cancelled=False, refund_over_limit=True, actor_id=None):
    """Apply the provider's truth to its order under the order's row lock; returns ``(Outcome, order_id)``.

    A payment that arrived past a limit (its seats resold, its discount code used up) is
    flagged, and refunded after the lock is released unless ``refund_over_limit`` is off
    (the re-read after our own refund must not refund again).
    """
    if state.order_id is None:
        return Outcome(OutcomeKind.IGNORED, OutcomeReason.NO_ORDER_ID), None
    with transaction():
        order = lock_order(state.order_id)
        if order is None:
            return Outcome(OutcomeKind.IGNORED, OutcomeReason.UNKNOWN_ORDER), state.order_id
        mismatch = _mismatch(order, state)
        if mismatch:
            flag_for_attention(order, f"not marked paid: {mismatch}")
            return Outcome(OutcomeKind.FLAGGED, OutcomeReason.MISMATCH, order.state, mismatch), order.id
        outcome = _apply(order, state, _Cause(cause, path, actor_id), cancelled)
    # The id the order was locked by: the committed order's own attributes would be loaded again.
    if outcome.reason is OutcomeReason.LATE_PAYMENT_REFUNDED and refund_over_limit:
        from .refunds import refund_late_payment  # refunds re-enter this module after the refund
        outcome = refund_late_payment(state.order_id, state.payment_ref, path)
    return outcome, state.order_id


def _mismatch(order, state):
    """Why the provider's checkout cannot be this order's payment, or None."""
    if order.checkout_ref and order.checkout_ref != state.checkout_ref:
        return "the checkout is not the order's own"
    if order.checkout_ref is None and not hmac.compare_digest(state.order_token or "", order_token(order.id)):
        # An order whose checkout reference was never stored adopts only a checkout that we made for it.
        return "the checkout does not carry this order's token"
    if state.status in (OrderStatus.PAID, OrderStatus.PROCESSING, OrderStatus.REFUNDED):
        if state.amount != order.total_amount:
            return f"amount {state.amount} does not match the order's {order.total_amount}"
        if (state.currency or "").lower() != order.currency.lower():
            return f"currency {state.currency} does not match the order's {order.currency}"
    return None


@dataclass(frozen=True)
class _Cause:
    """Why an order moves, for its history: the text, the path it came through, the staff member if any."""
    text: str
    path: str
    actor_id: int | None = None


def _apply(order, state, cause, cancelled):
    """Move the locked order towards ``state``; returns the :class:`Outcome`."""
    if order.checkout_ref is None:
        order.checkout_ref = state.checkout_ref
    if state.payment_ref and not order.payment_ref:
        order.payment_ref = state.payment_ref
    if state.refunded or state.status is OrderStatus.REFUNDED:
        _note_refunded(order, state, cause)
    target = _target(order, state.status, cancelled)
    if target is None:
        reason = OutcomeReason.STILL_OPEN if state.status is None else OutcomeReason.ALREADY
        return Outcome(OutcomeKind.UNCHANGED, reason, order.state)
    if order.state is target:
        if target is OrderStatus.PAID and state.refunded:
            return Outcome(OutcomeKind.APPLIED, OutcomeReason.PARTIAL_REFUND, order.state)
        return Outcome(OutcomeKind.UNCHANGED, OutcomeReason.ALREADY, order.state)
    return _move(order, target, cause)


def _note_refunded(order, state, cause):
    """Record the refunded total; a partial refund of a paid order gets a line in its history."""
    partial = order.state is OrderStatus.PAID and state.status is OrderStatus.PAID
    if partial and state.refunded > order.refunded_amount:
        record_history(order.id, order.status, order.status,
                       f"partial refund, {state.refunded} refunded in all ({cause.text})",
                       source=cause.path, actor_id=cause.actor_id)
    order.refunded_amount = state.refunded


def _target(order, status, cancelled):
    """The status to move to, or None: an expiry only settles an order still waiting for payment."""
    if status is OrderStatus.EXPIRED:
        if cancelled and order.state in _RELEASED:
            return OrderStatus.CANCELLED
        if order.state is not OrderStatus.PENDING:
            return None
    return status


def _move(order, target, cause):
    old = order.state
    try:
        change_status(order, target, cause.text, source=cause.path, actor_id=cause.actor_id)
    except LimitReached as exc:
        if target is OrderStatus.PROCESSING:
            # A delayed payment is still on its way and cannot be refunded yet; when it succeeds the
            # order moves to paid, finds the limit reached again, and is refunded then.
            flag_for_attention(order, f"delayed payment under way past a limit ({exc.limit})")
            return Outcome(OutcomeKind.UNCHANGED, OutcomeReason.AWAITING_DELAYED_PAYMENT, order.state)
        flag_for_attention(order, f"{LATE_PAYMENT_REFUND_REASON} ({exc.limit}): refunding")
        return Outcome(OutcomeKind.FLAGGED, OutcomeReason.LATE_PAYMENT_REFUNDED, order.state, "refund due")
    except TransitionRefused as exc:
        # A stale view never moves an order backwards (paid stays paid when an old expiry arrives)…
        if order.state in (OrderStatus.REFUNDED, OrderStatus.FAILED) and target in (OrderStatus.PAID,
                                                                                      OrderStatus.PROCESSING):
            # …but the provider showing money taken for an order we count as refunded or failed (a
            # refund that failed afterwards, say) needs a person: the buyer may hold void tickets.
            flag_for_attention(order, f"the provider says {target.value} but the order is {order.status}")
        logger.info("%s; left as %s", exc, order.status)
        return Outcome(OutcomeKind.UNCHANGED, OutcomeReason.STALE, order.state)
    # In the same transaction as the move: the mail exists exactly when the change does, once per order,
    # and the outbox's sender sends it after the commit (a mail server that is down never holds this up).
    notify_status_change(order, old, target)
    return Outcome(OutcomeKind.APPLIED, OutcomeReason.STATE_CHANGED, target)


def note_delivery(path):
    """Remember when ``path`` last delivered something (``doctor`` shows it).

    Bookkeeping only: losing a race for the first insert, or any database error here, must
    not cost the news itself, which is recorded next and fails loudly if it must.
    """
    now = utcnow()
    try:
        with transaction():
            updated = db.session.execute(update(DeliveryPath).where(DeliveryPath.name == path).values(
                last_delivered_at=now, deliveries=DeliveryPath.deliveries + 1)).rowcount
            if not updated:
                db.session.add(DeliveryPath(name=path, last_delivered_at=now, deliveries=1))
    except DBAPIError as exc:
        logger.debug("delivery of %s not noted: %s", path, exc)
