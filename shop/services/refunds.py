"""Refunds: asked of the provider outside any lock, recorded only once the provider shows them.

Each refund request carries an idempotency key, so running it twice (a retried event, the
CLI and the console at once, a double click) refunds once: ``refund-order-<id>`` for a full
refund, ``refund-order-<id>-<request>`` for a partial one, where ``<request>`` is made once per
deliberate request (the console's form, a CLI run). The key is also stored (``refund_requests``,
unique), so a provider without idempotency keys of its own (the sandbox) refunds once too.
"""
import logging
from decimal import Decimal, InvalidOperation

from sqlalchemy import delete, update
from sqlalchemy.exc import IntegrityError

from ..extensions import db
from ..models import Admission, OrderItem, Outcome, OutcomeKind, OutcomeReason, Quota, RefundRequest, TicketType
from ..models.orders import OrderStatus
from ..payments import PaymentRefused, PaymentUnavailable, gateway
from .audit import CLI, record
from .fulfilment import LATE_PAYMENT_REFUND_REASON, reconcile_order
from .mail import notify_status_change
from .orders import change_status, flag_for_attention, lock_order, quota_totals
from .transactions import transaction

logger = logging.getLogger(__name__)

CENT = Decimal("0.01")


class RefundNotPossible(Exception):
    """The order cannot be refunded (unknown, not paid, nothing that much left); the message says why."""


class RefundAlreadyRequested(RefundNotPossible):
    """This very request (its idempotency key) was made before: nothing is asked twice."""


def refund_key(order_id, request_key=None):
    """The idempotency key of a refund: one per order in full, one per request for a partial refund."""
    return f"refund-order-{order_id}" if request_key is None else f"refund-order-{order_id}-{request_key}"


def _partial_amount(order, amount):
    try:
        amount = Decimal(str(amount))
    except InvalidOperation:
        raise RefundNotPossible(f"{amount!r} is not an amount like 5.00") from None
    left = order.total_amount - order.refunded_amount
    if not amount.is_finite() or amount != amount.quantize(CENT) or not CENT <= amount <= left:
        raise RefundNotPossible(f"order {order.id}: a refund must be between 0.01 and the {left} not yet refunded")
    return amount


def _cancel_free_order(order, reason, path, actor):
    """A free order (nothing was paid, no provider involved) is cancelled by the state machine alone, in the
    caller's transaction: its tickets void, its seats back on sale, as a refund would."""
    change_status(order, OrderStatus.REFUNDED, f"free order cancelled by {actor.label}: {reason}"[:255],
                  source=path, actor_id=actor.user_id)
    notify_status_change(order, OrderStatus.PAID, OrderStatus.REFUNDED)  # the notice: the tickets are void
    record(actor, "order.refund", "order", order.id, after={"amount": "0.00 (free order)"}, note=reason)
    logger.info("order %s: free order cancelled via %s by %s", order.id, path, actor.label)
    return Outcome(OutcomeKind.APPLIED, OutcomeReason.STATE_CHANGED, OrderStatus.REFUNDED)


def refund_order(order_id, reason, path="console", *, amount=None, request_key=None, actor=CLI):
    """Refund a paid order through the provider, in full or ``amount`` of it, and record it once the
    provider shows it. A partial refund leaves the order paid and its tickets valid.

    ``request_key`` names one deliberate partial refund (required with ``amount``). Returns the
    :class:`Outcome` of the re-read. Raises RefundNotPossible (RefundAlreadyRequested for a
    repeated request), PaymentRefused or PaymentUnavailable.
    """
    if amount is not None and not request_key:
        raise RefundNotPossible("a partial refund needs a request key of its own")
    with transaction():
        order = lock_order(order_id)
        if order is None:
            raise RefundNotPossible(f"order {order_id} does not exist")
        if order.state is OrderStatus.PAID and not order.total_amount and amount is None:
            return _cancel_free_order(order, reason, path, actor)
        if order.state is not OrderStatus.PAID or not order.payment_ref:
            raise RefundNotPossible(f"order {order_id} is {order.status}; only paid orders can be refunded")
        amount = None if amount is None else _partial_amount(order, amount)
        payment_ref = order.payment_ref
    key = refund_key(order_id, None if amount is None else request_key)
    _claim(key, order_id, amount, reason, actor)
    try:
        gateway().refund(payment_ref=payment_ref, order_id=order_id, amount=amount, reason=reason,
                         idempotency_key=key)
    except (PaymentRefused, PaymentUnavailable):
        with transaction():  # not asked after all: the same request may be made again
            db.session.execute(delete(RefundRequest).where(RefundRequest.idempotency_key == key))
        raise
    with transaction():
        record(actor, "order.refund", "order", order_id, after={"amount": str(amount) if amount else "all",
                                                                 "idempotency_key": key}, note=reason)
    logger.info("order %s: refund of %s requested via %s by %s", order_id, amount or "everything", path, actor.label)
    what = f"{amount} refund" if amount is not None else "refund"
    return reconcile_order(order_id, path, refund_over_limit=False, actor_id=actor.user_id,
                           cause=f"{what} requested by {actor.label} via {path}")


def refund_order_line(order_id, item_id, reason, path="console", *, actor=CLI):
    """Refund one line of a paid order: its amount through the provider, then its tickets void and its seats free.

    The line's own request key makes it one refund however often it is asked. The seats go back
    only once the provider shows the money refunded, by one conditional UPDATE of the line
    (``refunded_quantity``), so a repeat changes nothing. Returns the :class:`Outcome` of the re-read.
    """
    with transaction():
        item = db.session.get(OrderItem, item_id)
        if item is None or item.order_id != order_id:
            raise RefundNotPossible(f"order {order_id} has no line {item_id}")
        amount, quantity, ticket_id = item.total, item.quantity, item.ticket_id
    outcome = refund_order(order_id, reason, path, amount=amount, request_key=f"line-{item_id}", actor=actor)
    with transaction():
        order = lock_order(order_id)
        if order.state is OrderStatus.PAID and order.refunded_amount >= amount and db.session.execute(
                update(OrderItem).where(OrderItem.id == item_id, OrderItem.refunded_quantity == 0)
                .values(refunded_quantity=quantity)).rowcount:
            db.session.execute(update(TicketType).where(TicketType.id == ticket_id)
                               .values(sold_quantity=TicketType.sold_quantity - quantity))
            for quota_id, count in quota_totals([(ticket_id, quantity)]):
                db.session.execute(update(Quota).where(Quota.id == quota_id)
                                   .values(sold_quantity=Quota.sold_quantity - count))
            db.session.execute(update(Admission).where(Admission.order_item_id == item_id).values(void=True))
            logger.info("order %s: line %s refunded, %s seat(s) of ticket %s free again",
                        order_id, item_id, quantity, ticket_id)
    return outcome


def _claim(key, order_id, amount, reason, actor):
    """Store the request under its key; RefundAlreadyRequested when that key was stored before."""
    try:
        with transaction():
            db.session.add(RefundRequest(idempotency_key=key, order_id=order_id, amount=amount,
                                         reason=(reason or "")[:255], requested_by=actor.user_id))
    except IntegrityError:
        raise RefundAlreadyRequested(f"order {order_id}: this refund was requested already") from None


def refund_late_payment(order_id, payment_ref, path):
    """Refund a payment that arrived past a limit (seats resold, discount used up); returns the Outcome.

    The provider refusing the refund leaves the order flagged for the organizer; the
    provider being unreachable raises PaymentUnavailable, so the news is delivered again
    and the refund retried (its idempotency key makes that one refund).
    """
    logger.warning("order %s: refunding a late payment: %s", order_id, LATE_PAYMENT_REFUND_REASON)
    try:
        gateway().refund(payment_ref=payment_ref, order_id=order_id, amount=None, reason=LATE_PAYMENT_REFUND_REASON,
                         idempotency_key=f"refund-order-{order_id}")
    except PaymentRefused as exc:
        with transaction():
            order = lock_order(order_id)
            flag_for_attention(order, f"{LATE_PAYMENT_REFUND_REASON}; the automatic refund failed: {exc}")
            status = order.state
        return Outcome(OutcomeKind.FLAGGED, OutcomeReason.REFUND_FAILED, status, str(exc)[:200])
    outcome = reconcile_order(order_id, path, refund_over_limit=False)
    if outcome.status is OrderStatus.REFUNDED:
        return Outcome(OutcomeKind.APPLIED, OutcomeReason.LATE_PAYMENT_REFUNDED, OrderStatus.REFUNDED)
    return outcome

