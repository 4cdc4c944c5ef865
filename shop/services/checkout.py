"""Placing an order: price it, hold its seats, and open the provider's payment page for it.

The hold is one short transaction of conditional UPDATEs (the affected-row count decides,
so two buyers can never take the last seat twice); the provider call happens after it has
committed, never while a row is locked.
"""
import logging
import time
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal

from flask import current_app
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import contains_eager, joinedload

from ..extensions import db
from ..models import AttendeeNames, DiscountCode, OrderItem, Quota, SaleState, TicketOrder, TicketType
from ..models.base import utcnow
from ..models.orders import OrderStatus
from ..payments import CheckoutLine, CheckoutSpec, PaymentRefused, PaymentUnavailable, gateway, order_token
from ..timezones import local_label
from .fulfilment import reconcile_order
from .mail import notify_status_change
from .orders import change_status, hold_lines, lock_order, reserve_discount_use
from .transactions import transaction

logger = logging.getLogger(__name__)

# MariaDB's "Deadlock found" and "Lock wait timeout exceeded": the transaction was rolled back, a retry is safe.
RETRYABLE_MYSQL_ERRORS = {1213, 1205}
HOLD_ATTEMPTS = 4
# One answer for every unusable code, so the page never tells whether a code exists.
UNUSABLE_CODE = "This discount code cannot be used for these tickets."


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


class NotOnSale(CheckoutRefused):
    """Outside the ticket type's sales window."""
    status = 409


class TooManyPending(CheckoutRefused):
    status = 429


class Busy(CheckoutRefused):
    status = 503


class PaymentProviderDown(CheckoutRefused):
    status = 502


@dataclass
class CheckoutRequest:
    """One buyer's order: ``ticket_id`` and ``quantity`` for one type, or ``items`` as ``(ticket_id, quantity)``."""
    event_id: int
    ticket_id: int | None
    quantity: int | None
    email: str
    discount_code: str = ""
    user_id: int | None = None
    client_ip: str | None = None
    items: tuple = ()
    names: dict = field(default_factory=dict)   # {ticket_id: [a name per ticket, …]} when the event asks

    def wanted(self):
        """``[(ticket_id, quantity), …]`` by ticket type id, one entry per type (repeated types added up)."""
        counts = {}
        for ticket_id, quantity in self.items or ((self.ticket_id, self.quantity),):
            counts[ticket_id] = counts.get(ticket_id, 0) + quantity
        return sorted(counts.items())


@dataclass(frozen=True)
class PricedLine:
    """One ticket type of an order as priced before the hold: what each costs, and the discount taken off each."""
    ticket: TicketType
    quantity: int
    unit_price: Decimal
    discount_amount: Decimal
    names: tuple = ()

    @property
    def total(self):
        return self.unit_price * self.quantity


@dataclass(frozen=True)
class ReturnUrls:
    """Where the provider sends the buyer back: ``success`` may hold ``{CHECKOUT_REF}``; ``cancel_for(order)``."""
    success: str
    cancel_for: object


def find_ticket(event_id, ticket_id):
    """The ticket type and its event, or NotFound: also for a ticket of another event, of a draft event,
    or a hidden one (the public is told nothing about what is not published)."""
    # One statement: the type, its event and the quotas it counts against (every checkout asks for all three).
    ticket = db.session.execute(
        select(TicketType).join(TicketType.event)
        .options(contains_eager(TicketType.event), joinedload(TicketType.quotas))
        .where(TicketType.id == ticket_id)
    ).unique().scalar_one_or_none()
    if ticket is None or ticket.event_id != event_id or not ticket.event.published or ticket.hidden:
        raise NotFound("That ticket does not exist for this event.")
    return ticket


def check_on_sale(ticket, now=None):
    """Refuse a ticket type outside its sales window, or once its event has started."""
    state = ticket.sale_state(now)
    if state is SaleState.STARTED:
        raise CheckoutRefused("This event has already started; tickets are no longer sold.")
    if state is SaleState.NOT_YET:
        raise NotOnSale(f"These tickets go on sale on {local_label(ticket.on_sale_from, ticket.event.timezone)}.")
    if state is SaleState.CLOSED:
        raise NotOnSale("Sales for these tickets have closed.")


def find_discount(code, event_id, now=None):
    """The usable discount code for ``code`` (case-insensitive), or CheckoutRefused with one neutral message.

    Unknown, for another event, not yet valid, expired or used up: the buyer hears the same,
    so the form cannot be used to find out which codes exist.
    """
    normalized = DiscountCode.normalize(code)
    if not normalized:
        return None
    now = now or utcnow()
    discount = db.session.execute(select(DiscountCode).where(DiscountCode.code == normalized)).scalar_one_or_none()
    usable = (discount is not None
              and discount.event_id in (None, event_id)
              and not (discount.valid_from and now < discount.valid_from)
              and not (discount.valid_until and now > discount.valid_until)
              and (discount.max_uses is None or discount.used_count + discount.reserved_count < discount.max_uses))
    if not usable:
        raise CheckoutRefused(UNUSABLE_CODE, field="discount_code")
    return discount


def check_pending_caps(req, now=None):
    """Refuse a new hold past the caps on live pending orders (per buyer, per address); TooManyPending.

    Counted in the database, so every worker and every VM agree. Each count is an index
    range over one buyer's live holds. A buyer racing themselves may pass by one; the cap
    is against hoarding, not an exact quota.
    """
    config = current_app.config
    now = now or utcnow()
    live = (TicketOrder.status == OrderStatus.PENDING.value, TicketOrder.hold_expires_at > now)
    caps = [(config["SHOP_MAX_PENDING_PER_BUYER"], TicketOrder.email == req.email),
            (config["SHOP_MAX_PENDING_PER_BUYER"], TicketOrder.user_id == req.user_id if req.user_id else None),
            (config["SHOP_MAX_PENDING_PER_IP"], TicketOrder.client_ip == req.client_ip if req.client_ip else None)]
    for cap, who in caps:
        if cap and who is not None and db.session.execute(select(func.count()).where(who, *live)).scalar() >= cap:
            raise TooManyPending(
                "You already have checkouts waiting for payment. Please finish or cancel one of them "
                "(its payment page, or the link we showed you) before starting another.")


def price_lines(req, now=None, *, for_preview=False):
    """The order's lines priced (each type found, on sale, the discount applied), and the discount; no hold taken.

    Raises a :class:`CheckoutRefused` subclass for a type that cannot be bought, a quantity out
    of bounds or an unusable code. The event page's preview (``for_preview``: the names it asks
    for are not required yet) and the checkout share it.
    """
    max_per_order = current_app.config["SHOP_MAX_PER_ORDER"]
    wanted = [(ticket_id, quantity) for ticket_id, quantity in req.wanted() if quantity]
    total_count = sum(quantity for _, quantity in wanted)
    if any(quantity < 0 for _, quantity in req.wanted()) or not 1 <= total_count <= max_per_order:
        raise CheckoutRefused(f"You can buy between 1 and {max_per_order} tickets at a time.", field="quantity")
    tickets = [find_ticket(req.event_id, ticket_id) for ticket_id, _ in wanted]
    for ticket in tickets:
        check_on_sale(ticket, now)
    discount = find_discount(req.discount_code, req.event_id, now)
    lines = []
    for ticket, (_, quantity) in zip(tickets, wanted, strict=True):
        unit_price = discount.discounted_price(ticket.price) if discount else Decimal(ticket.price)
        lines.append(PricedLine(ticket, quantity, unit_price, Decimal(ticket.price) - unit_price,
                                _attendee_names(ticket, quantity, req.names.get(ticket.id, ()), for_preview)))
    return lines, discount


def _attendee_names(ticket, quantity, given, for_preview=False):
    """The names for a line's tickets as the event asks for them: none kept, optional, or one required on each."""
    wanted = ticket.event.names
    if wanted is AttendeeNames.NONE:
        return ()
    names = tuple(str(name).strip() for name in list(given)[:quantity])
    names += ("",) * (quantity - len(names))
    if any(len(name) > 120 for name in names):
        raise CheckoutRefused("A name can be at most 120 characters long.", field="names")
    if wanted is AttendeeNames.REQUIRED and not all(names) and not for_preview:
        raise CheckoutRefused(f"Enter a name for each ticket (“{ticket.name}”): press “Show price” for a field "
                              "per ticket.", field="names")
    return names


def start_checkout(req: CheckoutRequest, urls: ReturnUrls):
    """Create a pending order holding every line's seats, and its payment page.

    Returns ``(order, checkout_url)``. An order whose total is 0 is paid at once, with no
    provider involved: ``checkout_url`` is None then. Raises a :class:`CheckoutRefused`
    subclass, with a message for the buyer, when the request cannot be honoured: no seats
    stay held then (an order the provider refused stays on record as ``failed``).
    """
    # These reads open the transaction that the hold commits (or the request's end rolls back).
    lines, discount = price_lines(req)
    total = sum((line.total for line in lines), Decimal("0.00"))
    if total:
        _check_minimum(total, discount)
    else:
        check_free_cap(req, sum(line.quantity for line in lines))
    check_pending_caps(req)
    event_title = lines[0].ticket.event.title
    page_lines = tuple(CheckoutLine(name=_line_name(event_title, line), quantity=line.quantity,
                                    unit_amount=line.unit_price) for line in lines)
    order = _hold_seats(req, lines, discount)
    if not total:
        return db.session.get(TicketOrder, order.id), None
    checkout = _open_checkout(order, page_lines, urls)
    with transaction():
        db.session.execute(TicketOrder.__table__.update().where(TicketOrder.id == order.id)
                           .values(stripe_checkout_session_id=checkout.ref, checkout_url=checkout.url[:2000]))
    logger.info("order %s: checkout opened", order.id)
    return order, checkout.url


def check_free_cap(req, quantity):
    """Refuse more free tickets for one address and event than ``SHOP_MAX_FREE_PER_BUYER``, held or paid (0: no cap).

    Free tickets cost the buyer nothing, so this is what stops one person taking a whole event.
    """
    cap = current_app.config["SHOP_MAX_FREE_PER_BUYER"]
    if not cap:
        return  # 0 switches the cap off, as with the pending caps
    taken = db.session.execute(
        select(func.coalesce(func.sum(TicketOrder.quantity), 0))
        .where(TicketOrder.email == req.email, TicketOrder.event_id == req.event_id,
               TicketOrder.total_amount == 0,
               TicketOrder.status.in_([OrderStatus.PENDING.value, OrderStatus.PAID.value]))).scalar()
    if taken + quantity > cap:
        left = max(0, cap - taken)
        raise CheckoutRefused(f"Free tickets are limited to {cap} per person for this event"
                              f"{f'; you can take {left} more' if left else ''}.", field="quantity")


def _pay_free_order(order):
    """A free order is paid in the transaction that holds its seats, through the state machine and the
    side effects fulfilment gives every payment (admissions, the confirmation in the outbox); no provider."""
    change_status(order, OrderStatus.PAID, "free order, nothing to pay", source="checkout")
    notify_status_change(order, OrderStatus.PENDING, OrderStatus.PAID)


def _check_minimum(total, discount):
    minimum = gateway().minimum_amount
    if total < minimum:
        currency = current_app.config["SHOP_CURRENCY"].upper()
        raise CheckoutRefused(f"The total is below the smallest card payment ({minimum} {currency}); "
                              "these tickets cannot be sold online.", field="discount_code" if discount else None)


def _open_checkout(order, lines, urls):
    """Ask the provider for the payment page, with no transaction open; on failure release the seats."""
    spec = CheckoutSpec(
        order_id=order.id, order_token=order_token(order.id), email=order.email, currency=order.currency,
        lines=lines, success_url=urls.success, cancel_url=urls.cancel_for(order), expires_at=order.hold_expires_at,
        metadata={"event_id": str(order.event_id), "ticket_id": str(order.ticket_id)})
    try:
        return gateway().start_checkout(spec, idempotency_key=f"checkout-order-{order.id}")
    except PaymentUnavailable as exc:
        _abandon(order.id, f"payment page not opened: {exc}")
        raise PaymentProviderDown("We could not reach our payment provider. Nothing was charged; "
                                  "please try again in a moment.") from exc
    except PaymentRefused as exc:
        _abandon(order.id, f"payment page not opened: {exc}")
        raise PaymentProviderDown("Our payment provider could not start this payment. Nothing was charged; "
                                  "please contact the organizer.") from exc


def _line_name(event_title, line):
    """The line as the payment page shows it; a discounted line says what it cost before and what came off."""
    name = f"{event_title} — {line.ticket.name}"
    if line.discount_amount:
        name += f" (was {Decimal(line.ticket.price):.2f}, {line.discount_amount:.2f} off each)"
    return name


def _hold_seats(req, lines, discount):
    """Take every line's seats (and the discount use) and insert the pending order, in one short transaction."""
    hold_minutes = current_app.config["SHOP_HOLD_MINUTES"]
    for attempt in range(1, HOLD_ATTEMPTS + 1):
        try:
            with transaction():
                return _try_hold(req, lines, discount, hold_minutes)
        except OperationalError as exc:
            code = exc.orig.args[0] if exc.orig is not None and exc.orig.args else None
            if code not in RETRYABLE_MYSQL_ERRORS:
                raise
            logger.warning("hold for event %s: lock conflict (%s), attempt %s", req.event_id, code, attempt)
            time.sleep(0.01 * attempt)
    raise Busy("So many people are buying right now that we could not hold your tickets. Please try again.")


def _try_hold(req, lines, discount, hold_minutes):
    # Cheap first: when a ticket just read shows too few seats, skip the UPDATEs and their row locks.
    # The conditional UPDATEs are what really decide, all lines or none (an exception rolls back the
    # lines already taken). Holds that ended are released by the sweeper once the provider confirms
    # their checkout is closed, never here on the database's word.
    seen_short = next((line.ticket for line in lines if line.ticket.remaining < line.quantity), None)
    if seen_short is not None:
        # What was just read says why, and that is what this buyer is told (the rush's common answer).
        _refuse_sold_out(seen_short, several=len(lines) > 1)
    short = hold_lines([(line.ticket.id, line.quantity) for line in lines],
                       membership=[(quota.id, line.ticket.id) for line in lines for quota in line.ticket.quotas])
    if short is not None:  # taken meanwhile: read again what is left now
        kind, row_id = short
        _refuse_sold_out(db.session.get(TicketType if kind == "ticket" else Quota, row_id, populate_existing=True),
                         several=len(lines) > 1)
    if discount is not None and not reserve_discount_use(discount.id):
        raise CheckoutRefused(UNUSABLE_CODE, field="discount_code")
    total = sum((line.total for line in lines), Decimal("0.00"))
    quantity = sum(line.quantity for line in lines)
    # The provider insists the page stays open at least 30 minutes when it is created, so the hold
    # gets one extra minute for the round-trip; the page then closes with the hold.
    order = TicketOrder(
        # ticket_id and unit_price keep their meaning for a single-type order; a mixed order names its first
        # line's type there (and its first line's price), and its lines in order_items say the rest.
        event_id=req.event_id, ticket_id=lines[0].ticket.id, user_id=req.user_id, email=req.email,
        client_ip=req.client_ip, quantity=quantity, unit_price=lines[0].unit_price,
        discount_code_id=discount.id if discount else None, total_amount=total,
        currency=current_app.config["SHOP_CURRENCY"], status=OrderStatus.PENDING.value,
        hold_expires_at=utcnow().replace(microsecond=0) + timedelta(minutes=hold_minutes + 1))
    order.items = [OrderItem(ticket_id=line.ticket.id, quantity=line.quantity, unit_price=line.unit_price,
                             discount_amount=line.discount_amount, attendee_names="\n".join(line.names) or None)
                   for line in lines]
    db.session.add(order)
    db.session.flush()
    if not total:
        _pay_free_order(order)
    db.session.expunge(order)  # kept for the provider call, which runs with no transaction open
    logger.info("order %s: holding %s", order.id,
                ", ".join(f"{line.quantity} × ticket {line.ticket.id}" for line in lines))
    return order


def _refuse_sold_out(row, several):
    """SoldOut for the ticket type (or the quota) ``row`` that did not fit, saying how many of it are left."""
    remaining = row.remaining
    what = f" of “{row.name}”" if several or isinstance(row, Quota) else ""
    if remaining:
        raise SoldOut(f"Only {remaining} {'ticket' if remaining == 1 else 'tickets'}{what} left; "
                      "please choose fewer.", field="quantity")
    raise SoldOut(f"Sold out: there are no tickets{what or ' of this kind'} left.")


def _abandon(order_id, cause):
    """Mark an order whose payment page could not be opened as failed, releasing its seats."""
    with transaction():
        order = lock_order(order_id)
        if order is not None and order.state is OrderStatus.PENDING:
            change_status(order, OrderStatus.FAILED, cause, source="checkout")


def order_for_checkout(checkout_ref):
    """The order a provider checkout belongs to, or None."""
    return db.session.execute(
        select(TicketOrder).where(TicketOrder.checkout_ref == checkout_ref)).scalar_one_or_none()


def cancel_checkout(order_id):
    """The buyer cancelled: close the payment page and release the seats now; returns the order.

    The provider's answer decides: if the buyer paid in another tab, the order becomes paid
    instead. If the provider cannot be reached, the hold simply ends with the page, and the
    sweeper releases it once the provider confirms.
    """
    with transaction():
        order = db.session.get(TicketOrder, order_id)
        if order is None:
            return None
        checkout_ref = order.checkout_ref if order.state is OrderStatus.PENDING else None
    if checkout_ref:
        try:
            gateway().close_checkout(checkout_ref)
            reconcile_order(order_id, "cancel_page", cancelled=True)
        except PaymentUnavailable as exc:
            logger.warning("order %s: cancel could not reach the provider (%s); the sweeper will release it",
                           order_id, exc)
    return db.session.get(TicketOrder, order_id, populate_existing=True)


def claim_provider_read(order_id, every=None):
    """Claim the right to ask the provider about an order now; False if someone asked within ``every``.

    One conditional UPDATE of ``checked_at`` decides, so however many people reload a
    success page, each order costs the provider at most one read every few seconds.
    """
    every = every or timedelta(seconds=current_app.config["SHOP_PROVIDER_READ_SECONDS"])
    now = utcnow()
    with transaction():
        return db.session.execute(
            TicketOrder.__table__.update()
            .where(TicketOrder.id == order_id,
                   (TicketOrder.checked_at.is_(None)) | (TicketOrder.checked_at < now - every))
            .values(checked_at=now)).rowcount == 1
