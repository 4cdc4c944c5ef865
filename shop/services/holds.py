"""Seat holds: when one has ended, and releasing the seats of holds that ended without any event."""
import logging
from datetime import timedelta

from sqlalchemy import func, select

from ..extensions import db
from ..models import TicketOrder
from ..models.base import utcnow
from ..models.orders import OrderStatus
from .orders import change_status, lock_order

logger = logging.getLogger(__name__)

# The Checkout Session closes at the hold's end (its expires_at), so after it Stripe takes no
# payment for the order. A little grace covers clock skew between us and Stripe; a payment
# that still arrives later is handled as a late payment (paid if seats remain, else refunded).
HOLD_GRACE = timedelta(minutes=2)


def hold_has_ended(now=None):
    """SQL condition: the order's hold ended (orders from before holds existed have none, and match nothing)."""
    return TicketOrder.hold_expires_at < (now or utcnow()) - HOLD_GRACE


def hold_ended(order, now=None):
    """Python twin of :func:`hold_has_ended` for a loaded order."""
    return order.hold_expires_at is not None and order.hold_expires_at < (now or utcnow()) - HOLD_GRACE


def pending_past_hold(now=None):
    """``(count, oldest hold end)`` of pending orders whose hold ended: what no event or sweep has settled yet."""
    now = now or utcnow()
    return db.session.execute(
        select(func.count(), func.min(TicketOrder.hold_expires_at))
        .where(TicketOrder.status == OrderStatus.PENDING.value, TicketOrder.hold_expires_at < now)).one()


def release_ended_holds(ticket_id=None, limit=200):
    """Expire pending orders whose hold ended, releasing their seats; returns how many were released.

    Database only, one short transaction per order, so it is safe to call from the checkout
    when a ticket type looks sold out. Asking Stripe to expire the session is the sweeper's job.
    """
    query = (select(TicketOrder.id).where(TicketOrder.status == OrderStatus.PENDING.value, hold_has_ended())
             .order_by(TicketOrder.hold_expires_at).limit(limit))
    if ticket_id is not None:
        query = query.where(TicketOrder.ticket_id == ticket_id)
    released = 0
    for order_id in db.session.execute(query).scalars().all():
        order = lock_order(order_id)
        # Re-checked under the lock: a payment may have settled it meanwhile.
        if order is not None and order.state is OrderStatus.PENDING and hold_ended(order):
            change_status(order, OrderStatus.EXPIRED, "hold ended without a payment")
            released += 1
        db.session.commit()
    return released
