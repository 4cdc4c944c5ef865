"""Refunds: asked of the provider outside any lock, recorded only once the provider shows them.

Each refund request carries an idempotency key, so running it twice (a retried event, the
CLI and the console at once) refunds once.
"""
import logging

from ..models import Outcome, OutcomeKind, OutcomeReason
from ..models.orders import OrderStatus
from ..payments import PaymentRefused, gateway
from .fulfilment import LATE_PAYMENT_REFUND_REASON, reconcile_order
from .orders import flag_for_attention, lock_order
from .transactions import transaction

logger = logging.getLogger(__name__)


class RefundNotPossible(Exception):
    """The order cannot be refunded (unknown, not paid); the message says why."""


def refund_order(order_id, reason, path="console"):
    """Refund a paid order in full through the provider and record it once the provider shows it.

    Returns the :class:`Outcome` of the re-read. Raises RefundNotPossible, PaymentRefused or
    PaymentUnavailable.
    """
    with transaction():
        order = lock_order(order_id)
        if order is None:
            raise RefundNotPossible(f"order {order_id} does not exist")
        if order.state is not OrderStatus.PAID or not order.payment_ref:
            raise RefundNotPossible(f"order {order_id} is {order.status}; only paid orders can be refunded")
        payment_ref = order.payment_ref
    gateway().refund(payment_ref=payment_ref, order_id=order_id, amount=None, reason=reason,
                     idempotency_key=f"refund-order-{order_id}")
    logger.info("order %s: refund requested via %s", order_id, path)
    return reconcile_order(order_id, path, refund_over_limit=False)


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

