"""The order state machine: the one place an order changes state, and what each change does to seats.

Callers lock the order first (``lock_order``) inside a transaction; ``change_status``
re-checks the current state, applies the move's effects on the ticket type and discount
counters with single-statement UPDATEs (each takes that row's lock for the rest of the
short transaction), and logs the cause. Lock order everywhere: order → tickets (by id) → quotas (by id)
→ discount.
"""
import base64
import logging
import secrets

from sqlalchemy import or_, select, update

from ..extensions import db
from ..models import Admission, DiscountCode, OrderHistory, Quota, TicketOrder, TicketType
from ..models.base import utcnow
from ..models.catalog import quota_tickets
from ..models.orders import TRANSITIONS, OrderStatus

logger = logging.getLogger(__name__)


class TransitionRefused(Exception):
    """The state machine does not allow that move."""


class LimitReached(Exception):
    """A payment arrived for an order whose hold was released, and a limit it needs is used up.

    ``limit`` names it: ``"seats"`` or ``"discount"``. Nothing was changed.
    """

    def __init__(self, message, limit):
        super().__init__(message)
        self.limit = limit


def lock_order(order_id):
    """``SELECT … FOR UPDATE`` the order; returns None for an unknown id."""
    return db.session.execute(
        select(TicketOrder).where(TicketOrder.id == order_id).with_for_update(of=TicketOrder)
        .execution_options(populate_existing=True)
    ).unique().scalar_one_or_none()


def hold_lines(lines, membership=None):
    """Hold every ``(ticket_id, quantity)`` line, within its type's capacity and every quota it shares, or none.

    Returns None when all fit, else what did not: ``("ticket", id)`` or ``("quota", id)``. The rows are
    taken in one fixed order, ticket types by id then quotas by id, as every other path does, so
    two orders over the same types wait for each other instead of deadlocking. Whatever was taken
    before a refusal stays taken until the caller's transaction rolls it back. ``membership``: the
    lines' ``(quota_id, ticket_id)`` pairs when the caller has them loaded already (see ``quota_totals``).
    """
    quotas = quota_totals(lines, membership)  # before the first row lock: each statement after it prolongs the lock
    for ticket_id, quantity in sorted(lines):
        if not hold_seats(ticket_id, quantity):
            return "ticket", ticket_id
    for quota_id, quantity in quotas:
        if not _bump(Quota, quota_id, _quota_free(quantity), held_quantity=quantity):
            return "quota", quota_id
    return None


def quota_totals(lines, membership=None):
    """``[(quota_id, quantity), …]`` by quota id: how many of the ``(ticket_id, quantity)`` lines each quota counts.

    Reads which quotas count which types, unless given as ``membership``, ``(quota_id, ticket_id)`` pairs.
    """
    quantities = dict(lines)
    if not quantities:
        return []
    if membership is None:
        membership = db.session.execute(select(quota_tickets.c.quota_id, quota_tickets.c.ticket_id)
                                        .where(quota_tickets.c.ticket_id.in_(quantities)))
    totals = {}
    for quota_id, ticket_id in membership:
        totals[quota_id] = totals.get(quota_id, 0) + quantities[ticket_id]
    return sorted(totals.items())


def _quota_free(quantity):
    return Quota.capacity - Quota.sold_quantity - Quota.held_quantity >= quantity


def hold_seats(ticket_id, quantity):
    """Count ``quantity`` seats of a ticket type as held if that many are free; True when taken.

    One conditional UPDATE: its affected-row count decides, so two buyers can never take the
    last seat twice. The row stays locked until the caller's transaction ends.
    """
    return bool(_bump(TicketType, ticket_id, _seats_free(quantity), held_quantity=quantity))


def reserve_discount_use(discount_id):
    """Count one live hold against a discount code if it has uses left (``max_uses``); True when taken."""
    return bool(_bump(DiscountCode, discount_id, _discount_use_left(), reserved_count=1))


def _bump(model, row_id, condition=None, **deltas):
    """``UPDATE model SET col = col + delta … WHERE id = row_id [AND condition]``; returns the rows matched."""
    stmt = update(model).where(model.id == row_id)
    if condition is not None:
        stmt = stmt.where(condition)
    values = {name: getattr(model, name) + delta for name, delta in deltas.items()}
    return db.session.execute(stmt.values(**values).execution_options(synchronize_session=False)).rowcount


def _seats_free(quantity):
    return TicketType.capacity - TicketType.sold_quantity - TicketType.held_quantity >= quantity


def _discount_use_left():
    return or_(DiscountCode.max_uses.is_(None),
               DiscountCode.used_count + DiscountCode.reserved_count < DiscountCode.max_uses)


def change_status(order, new_status, cause, *, source="", actor_id=None):
    """Move a locked ``order`` to ``new_status`` and apply the move's effects; returns False if already there.

    Every move is written to the order's history with its ``cause`` (which event, path,
    sweeper or staff member), the ``source`` path it came through and the staff ``actor_id``
    when a person caused it.

    Effects: leaving a held state releases the seats (and the discount reservation);
    entering ``paid`` counts the seats as sold, counts the discount as used and issues
    the admission tickets; leaving ``paid`` returns the seats and voids the tickets.
    A move that needs what the order no longer holds (its seats, a use of its discount
    code) takes it only within every limit, else raises :class:`LimitReached` having
    changed nothing.
    """
    old, new = order.state, OrderStatus(new_status)
    if old is new:
        return False
    if new not in TRANSITIONS[old]:
        raise TransitionRefused(f"order {order.id}: {old.value} → {new.value} is not allowed")
    held = order.holds_seats
    if (new.holds_seats or new is OrderStatus.PAID) and not held:
        _retake_within_limits(order, new)
    else:
        _move_held_counts(order, old, new, held)
    if new is OrderStatus.PAID:
        order.paid_at = utcnow()
        # 80 random bits in base32 (A–Z, 2–7: no 0, 1 or 8 to misread as O, I or B); a code opens its ticket page.
        db.session.add_all(Admission(order_id=order.id, order_item_id=item.id, attendee_name=name,
                                     code=base64.b32encode(secrets.token_bytes(10)).decode())
                           for item in order.items for name in _names_of(item))
    elif old is OrderStatus.PAID:
        db.session.execute(update(Admission).where(Admission.order_id == order.id).values(void=True))
    order.status = new.value
    record_history(order.id, old.value, new.value, cause, source=source, actor_id=actor_id)
    logger.info("order %s: %s → %s (%s)", order.id, old.value, new.value, cause)
    return True


def _names_of(item):
    """One entry per ticket of the line: the name given before paying, or None."""
    names = (item.attendee_names or "").split("\n")
    return [(names[n].strip() or None) if n < len(names) else None for n in range(item.quantity)]


def record_history(order_id, from_status, to_status, cause, *, source="", actor_id=None):
    """Add a line to an order's timeline (in the caller's transaction)."""
    db.session.add(OrderHistory(order_id=order_id, from_status=from_status, to_status=to_status,
                                cause=(cause or "")[:255], source=(source or "")[:32], actor_id=actor_id))


def _move_held_counts(order, old, new, held):
    """Counters for a move that needs nothing new: the order's seats and code use move with it."""
    deltas, lines = _seat_moves(order, old, new, held)
    # Ticket types by id, then quotas by id: the one lock order of every path.
    for ticket_id, qty in sorted(lines):
        _bump(TicketType, ticket_id, **{column: sign * qty for column, sign in deltas.items()})
    for quota_id, qty in quota_totals(lines):
        _bump(Quota, quota_id, **{column: sign * qty for column, sign in deltas.items()})
    code_id = order.discount_code_id
    if not code_id:
        return
    if held and not new.holds_seats:
        _bump(DiscountCode, code_id, reserved_count=-1)
    if held and new is OrderStatus.PAID:
        _bump(DiscountCode, code_id, used_count=1)
    elif old is OrderStatus.PAID:
        _bump(DiscountCode, code_id, used_count=-1)


def _seat_moves(order, old, new, held):
    """``({counter: +1 or -1}, [(ticket_id, quantity), …])``: how a move shifts the order's seats."""
    if held and new is OrderStatus.PAID:
        return {"held_quantity": -1, "sold_quantity": 1}, [(i.ticket_id, i.quantity) for i in order.items]
    if held and not new.holds_seats:
        return {"held_quantity": -1}, [(i.ticket_id, i.quantity) for i in order.items]
    if old is OrderStatus.PAID:
        # A line refunded on its own gave its seats back then.
        return {"sold_quantity": -1}, [(i.ticket_id, i.quantity - i.refunded_quantity)
                                       for i in order.items if i.quantity > i.refunded_quantity]
    return {}, []


def _retake_within_limits(order, new):
    """Take again the seats (and the code use) of an order whose hold was released: a late payment.

    Each limit is a conditional UPDATE; a savepoint undoes the seats when the code is used
    up, so :class:`LimitReached` leaves the caller's transaction as it was.
    """
    column = "held_quantity" if new.holds_seats else "sold_quantity"
    with db.session.begin_nested():  # an exception inside rolls back to here
        for item in order.items:
            if not _bump(TicketType, item.ticket_id, _seats_free(item.quantity), **{column: item.quantity}):
                raise LimitReached(f"order {order.id}: {item.quantity} seat(s) of ticket {item.ticket_id} "
                                   "no longer available", "seats")
        for quota_id, qty in quota_totals([(item.ticket_id, item.quantity) for item in order.items]):
            if not _bump(Quota, quota_id, _quota_free(qty), **{column: qty}):
                raise LimitReached(f"order {order.id}: quota {quota_id} has no {qty} seat(s) left", "seats")
        code_column = "reserved_count" if new.holds_seats else "used_count"
        if order.discount_code_id and not _bump(DiscountCode, order.discount_code_id, _discount_use_left(),
                                                **{code_column: 1}):
            raise LimitReached(f"order {order.id}: discount code has no uses left", "discount")
    if new.holds_seats:
        order.hold_expires_at = order.hold_expires_at or utcnow()  # it holds seats from now on


def flag_for_attention(order, reason):
    """Put an order on the organizer's attention list (``flask shop attention``) with why."""
    order.needs_attention = True
    order.attention_reason = reason[:255]
    logger.warning("order %s needs attention: %s", order.id, reason)
