"""The order state machine: the one place an order changes state, and what each change does to seats.

Callers lock the order first (``lock_order``) inside a transaction; ``change_status``
re-checks the current state, applies the move's effects on the ticket type and discount
counters with single-statement UPDATEs (each takes that row's lock for the rest of the
short transaction), and logs the cause. Lock order everywhere: order → ticket → discount.
"""
import logging
import secrets

from sqlalchemy import or_, select, update

from ..extensions import db
from ..models import Admission, DiscountCode, TicketOrder, TicketType
from ..models.base import utcnow
from ..models.orders import TRANSITIONS, OrderStatus

logger = logging.getLogger(__name__)


class TransitionRefused(Exception):
    """The state machine does not allow that move."""


class NoSeatsLeft(Exception):
    """A late payment arrived for an order whose seats were released, and none remain."""


def lock_order(order_id):
    """``SELECT … FOR UPDATE`` the order; returns None for an unknown id."""
    return db.session.execute(
        select(TicketOrder).where(TicketOrder.id == order_id).with_for_update(of=TicketOrder)
        .execution_options(populate_existing=True)
    ).unique().scalar_one_or_none()


def hold_seats(ticket_id, quantity):
    """Count ``quantity`` seats of a ticket type as held if that many are free; True when taken.

    One conditional UPDATE: its affected-row count decides, so two buyers can never take the
    last seat twice. The row stays locked until the caller's transaction ends.
    """
    return bool(_bump(TicketType, ticket_id, _seats_free(quantity), held_quantity=quantity))


def reserve_discount_use(discount_id):
    """Count one live hold against a discount code if it has uses left (``max_uses``); True when taken."""
    under_limit = or_(DiscountCode.max_uses.is_(None),
                      DiscountCode.used_count + DiscountCode.reserved_count < DiscountCode.max_uses)
    return bool(_bump(DiscountCode, discount_id, under_limit, reserved_count=1))


def _bump(model, row_id, condition=None, **deltas):
    """``UPDATE model SET col = col + delta … WHERE id = row_id [AND condition]``; returns the rows matched."""
    stmt = update(model).where(model.id == row_id)
    if condition is not None:
        stmt = stmt.where(condition)
    values = {name: getattr(model, name) + delta for name, delta in deltas.items()}
    return db.session.execute(stmt.values(**values).execution_options(synchronize_session=False)).rowcount


def _seats_free(quantity):
    return TicketType.capacity - TicketType.sold_quantity - TicketType.held_quantity >= quantity


def change_status(order, new_status, cause):
    """Move a locked ``order`` to ``new_status`` and apply the move's effects; returns False if already there.

    Effects: leaving a held state releases the seats (and the discount reservation);
    entering ``paid`` counts the seats as sold, counts the discount as used and issues
    the admission tickets; leaving ``paid`` returns the seats and voids the tickets.
    A move that needs seats the order no longer holds takes them only if they are free,
    else raises :class:`NoSeatsLeft` having changed nothing.
    """
    old = order.state
    new = OrderStatus(new_status)
    if old is new:
        return False
    if new not in TRANSITIONS[old]:
        raise TransitionRefused(f"order {order.id}: {old.value} → {new.value} is not allowed")
    qty, code_id, held = order.quantity, order.discount_code_id, order.holds_seats

    # Seats first, conditionally, so that refusing the move leaves everything untouched.
    if (new.holds_seats or new is OrderStatus.PAID) and not held:
        column = "held_quantity" if new.holds_seats else "sold_quantity"
        if not _bump(TicketType, order.ticket_id, _seats_free(qty), **{column: qty}):
            raise NoSeatsLeft(f"order {order.id}: {qty} seat(s) no longer available")
        if new.holds_seats:
            order.hold_expires_at = order.hold_expires_at or utcnow()  # it holds seats from now on
            if code_id:
                _bump(DiscountCode, code_id, reserved_count=1)
    elif held and new is OrderStatus.PAID:
        _bump(TicketType, order.ticket_id, held_quantity=-qty, sold_quantity=qty)
    elif held and not new.holds_seats:
        _bump(TicketType, order.ticket_id, held_quantity=-qty)
    elif old is OrderStatus.PAID:
        _bump(TicketType, order.ticket_id, sold_quantity=-qty)

    if code_id:
        if held and not new.holds_seats:
            _bump(DiscountCode, code_id, reserved_count=-1)
        if new is OrderStatus.PAID:
            _bump(DiscountCode, code_id, used_count=1)
        elif old is OrderStatus.PAID:
            _bump(DiscountCode, code_id, used_count=-1)

    if new is OrderStatus.PAID:
        order.paid_at = utcnow()
        db.session.add_all(Admission(order_id=order.id, code=secrets.token_hex(8).upper()) for _ in range(qty))
    elif old is OrderStatus.PAID:
        db.session.execute(update(Admission).where(Admission.order_id == order.id).values(void=True))

    order.status = new.value
    logger.info("order %s: %s → %s (%s)", order.id, old.value, new.value, cause)
    return True


def flag_for_attention(order, reason):
    """Put an order on the organizer's attention list (``flask shop attention``) with why."""
    order.needs_attention = True
    order.attention_reason = reason[:255]
    logger.warning("order %s needs attention: %s", order.id, reason)
