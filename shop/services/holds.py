"""Seat holds: when one has ended, and how many orders sit pending past theirs."""
from datetime import timedelta

from sqlalchemy import func, select

from ..extensions import db
from ..models import TicketOrder
from ..models.base import utcnow
from ..models.orders import OrderStatus

# The Checkout Session closes at the hold's end (its expires_at), so after it the provider
# takes no payment for the order. A little grace covers clock skew between us and the
# provider; the seats are released only once the provider confirms the checkout is closed.
HOLD_GRACE = timedelta(minutes=2)


def hold_has_ended(now=None):
    """SQL condition: the order's hold ended (orders from before holds existed have none, and match nothing)."""
    return TicketOrder.hold_expires_at < (now or utcnow()) - HOLD_GRACE


def hold_ended(order, now=None):
    """Python twin of :func:`hold_has_ended` for a loaded order."""
    return order.hold_expires_at is not None and order.hold_expires_at < (now or utcnow()) - HOLD_GRACE


def pending_past_hold(now=None):
    """``(count, oldest hold end)`` of pending orders whose hold ended: what no event or sweep has settled yet.

    An index range on (status, hold_expires_at): only the stuck orders are read.
    """
    now = now or utcnow()
    return db.session.execute(
        select(func.count(), func.min(TicketOrder.hold_expires_at))
        .where(TicketOrder.status == OrderStatus.PENDING.value, TicketOrder.hold_expires_at < now)).one()
