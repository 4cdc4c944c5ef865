"""Placing an order: price it, hold its seats, and open a Stripe Checkout Session for it.

The hold is one short transaction of conditional UPDATEs (the affected-row count decides,
so two buyers can never take the last seat twice); the Stripe call happens after it has
committed, never while a row is locked.
"""
import calendar
import logging
import time
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

from flask import current_app
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from ..extensions import db
from ..models import DiscountCode, TicketOrder, TicketType
from ..models.base import utcnow
from ..models.orders import OrderStatus
from ..payments import PaymentError, PaymentUnavailable, gateway
from .fulfilment import reconcile_order
from .holds import release_ended_holds
from .orders import change_status, hold_seats, lock_order, reserve_discount_use

logger = logging.getLogger(__name__)

# MariaDB's "Deadlock found" and "Lock wait timeout exceeded": the transaction was rolled back, a retry is safe.
RETRYABLE_MYSQL_ERRORS = {1213, 1205}
HOLD_ATTEMPTS = 4
# Stripe's smallest charge in USD and EUR; below it Stripe refuses the Checkout Session.
MINIMUM_TOTAL = Decimal("0.50")


class CheckoutRefused(Exception):
    """The buyer's request cannot be honoured; ``message`` is for the buyer, ``status`` for HTTP."""
    status = 400

    def __init__(self, message, field=None):
        super().__init__(message)
        self.message = message
        self.field = field


class NotFound(CheckoutRefused):
    status = 404


class SoldOut(CheckoutRefused):
    status = 409


class Busy(CheckoutRefused):
    status = 503


class PaymentProviderDown(CheckoutRefused):
    status = 502


@dataclass
class CheckoutRequest:
    event_id: int
    ticket_id: int
    quantity: int
    email: str
    discount_code: str = ""
    user_id: int | None = None


def find_ticket(event_id, ticket_id):
    """The ticket type and its event, or NotFound (also for a ticket of another event)."""
    ticket = db.session.execute(
        select(TicketType).join(TicketType.event).where(TicketType.id == ticket_id)
    ).scalar_one_or_none()
    if ticket is None or ticket.event_id != event_id:
        raise NotFound("That ticket does not exist for this event.")
    return ticket


def find_discount(code, event_id, now=None):
    """The usable discount code for ``code`` (case-insensitive), or CheckoutRefused saying why not."""
    normalized = DiscountCode.normalize(code)
    if not normalized:
        return None
    now = now or utcnow()
    discount = db.session.execute(select(DiscountCode).where(DiscountCode.code == normalized)).scalar_one_or_none()
    if discount is None:
        raise CheckoutRefused(f"The discount code {normalized} does not exist.", field="discount_code")
    if discount.event_id is not None and discount.event_id != event_id:
        raise CheckoutRefused(f"The discount code {normalized} is not valid for this event.", field="discount_code")
    if discount.valid_from and now < discount.valid_from:
        raise CheckoutRefused(f"The discount code {normalized} is not valid yet.", field="discount_code")
    if discount.valid_until and now > discount.valid_until:
        raise CheckoutRefused(f"The discount code {normalized} has expired.", field="discount_code")
    if discount.max_uses is not None and discount.used_count + discount.reserved_count >= discount.max_uses:
        raise SoldOut(f"The discount code {normalized} has been used up.", field="discount_code")
    return discount


def start_checkout(req: CheckoutRequest, *, success_url, cancel_url_for):
    """Create a pending order holding ``req.quantity`` seats and its Checkout Session.

    Returns ``(order, checkout_url)``. Raises a :class:`CheckoutRefused` subclass, with a
    message for the buyer, when the request cannot be honoured: no seats stay held then (an
    order Stripe refused stays on record as ``failed``). ``cancel_url_for(order)`` builds
    the order's cancel link.
    """
    max_per_order = current_app.config["SHOP_MAX_PER_ORDER"]
    if not 1 <= req.quantity <= max_per_order:
        raise CheckoutRefused(f"You can buy between 1 and {max_per_order} tickets at a time.", field="quantity")
    ticket = find_ticket(req.event_id, req.ticket_id)
    if ticket.event.starts_at <= utcnow():
        raise CheckoutRefused("This event has already started; tickets are no longer sold.")
    discount = find_discount(req.discount_code, req.event_id)
    unit_price = discount.discounted_price(ticket.price) if discount else Decimal(ticket.price)
    if unit_price * req.quantity < MINIMUM_TOTAL:
        currency = current_app.config["SHOP_CURRENCY"].upper()
        raise CheckoutRefused(f"The total is below the smallest card payment ({MINIMUM_TOTAL} {currency}); "
                              "these tickets cannot be sold online.", field="discount_code" if discount else None)
    product_name = f"{ticket.event.title} — {ticket.name}"

    order = _hold_seats(req, ticket, discount, unit_price)
    expires_at, cancel_url = calendar.timegm(order.hold_expires_at.timetuple()), cancel_url_for(order)
    # Keep the loaded order but end the transaction: no connection is held through the Stripe call.
    db.session.expunge(order)
    db.session.rollback()
    try:
        session = gateway().create_checkout_session(order=order, product_name=product_name, success_url=success_url,
                                                    cancel_url=cancel_url, expires_at=expires_at)
    except PaymentError as exc:
        # Release the seats at once: the buyer never got a page to pay on.
        _abandon(order.id, f"checkout session not created: {exc}")
        if isinstance(exc, PaymentUnavailable):
            raise PaymentProviderDown("We could not reach our payment provider. Nothing was charged; "
                                      "please try again in a moment.") from exc
        raise PaymentProviderDown("Our payment provider could not start this payment. Nothing was charged; "
                                  "please contact the organizer.") from exc
    db.session.execute(
        TicketOrder.__table__.update().where(TicketOrder.id == order.id)
        .values(stripe_checkout_session_id=session["id"]))
    db.session.commit()
    logger.info("order %s: checkout session %s created", order.id, session["id"])
    return order, session["url"]


def _hold_seats(req, ticket, discount, unit_price):
    """Take the seats (and the discount use) and insert the pending order, in one short transaction."""
    hold_minutes = current_app.config["SHOP_HOLD_MINUTES"]
    for attempt in range(1, HOLD_ATTEMPTS + 1):
        try:
            return _try_hold(req, ticket, discount, unit_price, hold_minutes)
        except OperationalError as exc:
            db.session.rollback()
            code = exc.orig.args[0] if exc.orig is not None and exc.orig.args else None
            if code not in RETRYABLE_MYSQL_ERRORS:
                raise
            logger.warning("hold for ticket %s: lock conflict (%s), attempt %s", ticket.id, code, attempt)
            time.sleep(0.01 * attempt)
    raise Busy("So many people are buying right now that we could not hold your tickets. Please try again.")


def _try_hold(req, ticket, discount, unit_price, hold_minutes):
    # Cheap first: when the ticket just read shows too few seats, skip the UPDATE (and its row lock)
    # unless ended holds can be released. The conditional UPDATE below is what really decides.
    enough = ticket.remaining >= req.quantity
    if not (enough and hold_seats(ticket.id, req.quantity)):
        db.session.rollback()
        # Holds that ended without an event still count until released; release them and look again.
        if not release_ended_holds(ticket_id=ticket.id) or not hold_seats(ticket.id, req.quantity):
            db.session.rollback()
            remaining = db.session.get(TicketType, ticket.id, populate_existing=True).remaining
            if remaining:
                raise SoldOut(f"Only {remaining} ticket(s) left; please choose fewer.", field="quantity")
            raise SoldOut("Sold out: there are no tickets of this kind left.")
    if discount is not None and not reserve_discount_use(discount.id):
        db.session.rollback()
        raise SoldOut(f"The discount code {discount.code} has been used up.", field="discount_code")
    # Stripe insists expires_at is at least 30 minutes ahead when it creates the session, so
    # the hold gets one extra minute for the round-trip; the session then ends with the hold.
    order = TicketOrder(
        event_id=req.event_id, ticket_id=ticket.id, user_id=req.user_id, email=req.email,
        quantity=req.quantity, unit_price=unit_price, discount_code_id=discount.id if discount else None,
        total_amount=unit_price * req.quantity, currency=current_app.config["SHOP_CURRENCY"],
        status=OrderStatus.PENDING.value,
        hold_expires_at=utcnow().replace(microsecond=0) + timedelta(minutes=hold_minutes + 1))
    db.session.add(order)
    db.session.commit()
    logger.info("order %s: holding %s × ticket %s for %s", order.id, order.quantity, ticket.id, order.email)
    return order


def _abandon(order_id, cause):
    """Mark an order whose checkout could not start as failed, releasing its seats."""
    order = lock_order(order_id)
    if order is not None and order.state is OrderStatus.PENDING:
        change_status(order, OrderStatus.FAILED, cause)
    db.session.commit()


def order_for_session(session_id):
    """The order a Checkout Session belongs to, or None."""
    return db.session.execute(
        select(TicketOrder).where(TicketOrder.stripe_checkout_session_id == session_id)).scalar_one_or_none()


def cancel_checkout(order_id):
    """The buyer came back through "cancel": expire the session and release the seats now; returns the order.

    If Stripe cannot be reached the hold simply ends with the session, released by the sweeper.
    """
    order = db.session.get(TicketOrder, order_id)
    if order is None:
        return None
    session_id = order.stripe_checkout_session_id if order.state is OrderStatus.PENDING else None
    db.session.rollback()  # no transaction stays open across the Stripe calls
    if session_id:
        try:
            gateway().expire_session(session_id)
            # Stripe's session decides: if the buyer paid in another tab, the order becomes paid instead.
            reconcile_order(order_id, "cancel_page", cancelled=True)
        except PaymentUnavailable as exc:
            logger.warning("order %s: cancel could not reach Stripe (%s); the sweeper will release it", order_id, exc)
    return db.session.get(TicketOrder, order_id, populate_existing=True)
