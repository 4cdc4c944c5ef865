"""Releasing seats held by orders whose hold ended without any event saying so."""
import logging
from datetime import timedelta

from sqlalchemy import select

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


def ended_holds(ticket_id=None, limit=200):
    """Ids of pending orders whose hold ended (oldest first), optionally for one ticket type."""
    query = (select(TicketOrder.id)
             .where(TicketOrder.status == OrderStatus.PENDING.value,
                    TicketOrder.hold_expires_at < utcnow() - HOLD_GRACE)
             .order_by(TicketOrder.hold_expires_at).limit(limit))
    if ticket_id is not None:
        query = query.where(TicketOrder.ticket_id == ticket_id)
    return db.session.execute(query).scalars().all()


def release_ended_holds(ticket_id=None, limit=200):
    """Expire pending orders whose hold ended, releasing their seats; returns how many were released.

    Database only, one short transaction per order, so it is safe to call from the checkout
    when a ticket type looks sold out. Asking Stripe to expire the session is the sweeper's job.
    """
    released = 0
    for order_id in ended_holds(ticket_id, limit):
        order = lock_order(order_id)
        if order is not None and order.state is OrderStatus.PENDING and order.hold_expires_at < utcnow() - HOLD_GRACE:
            change_status(order, OrderStatus.EXPIRED, "hold ended without a payment")
            released += 1
        db.session.commit()
    return released
