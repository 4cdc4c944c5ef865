"""What the organizer's console reads: sales per event and ticket type, sales over time, the attention
list, order search and an order's whole story. Reads only, each page a few indexed queries
(aggregates grouped in the database, relations loaded together), except :func:`resolve_attention`.
Reads leave their transaction to the request's end, as the other pages do, so the rows they return
stay loaded for the template.
"""
import re
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal

from sqlalchemy import false, func, or_, select, true, update
from sqlalchemy.orm import joinedload, selectinload

from ..extensions import db
from ..models import Admission, DiscountCode, Event, OrderHistory, TicketOrder, TicketType
from ..models.base import utcnow
from ..models.orders import OrderStatus
from .audit import entries, record
from .transactions import transaction

ZERO = Decimal("0.00")
# Orders whose money was taken: paid ones, and refunded ones (in part or in full).
MONEY_TAKEN = (OrderStatus.PAID.value, OrderStatus.REFUNDED.value)
ORDER_ID = re.compile(r"#?([0-9]{1,10})")
SEARCH_LIMIT = 100
DASHBOARD_EVENTS = 50


@dataclass
class Totals:
    """Seats and money of a ticket type, or summed over an event."""
    capacity: int = 0
    sold: int = 0
    held: int = 0
    checked_in: int = 0
    gross: Decimal = ZERO
    refunded: Decimal = ZERO

    @property
    def net(self):
        return self.gross - self.refunded

    def add(self, other):
        for name in ("capacity", "sold", "held", "checked_in", "gross", "refunded"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class TicketStats:
    ticket: TicketType
    totals: Totals


@dataclass
class EventStats:
    event: Event
    tickets: list = field(default_factory=list)
    totals: Totals = field(default_factory=Totals)


def _stats_for(events):
    """EventStats for ``events`` (ticket types loaded): two grouped queries, whatever the number of events."""
    ids = [e.id for e in events]
    money = {ticket_id: (gross, refunded) for ticket_id, gross, refunded in db.session.execute(
        select(TicketOrder.ticket_id, func.sum(TicketOrder.total_amount), func.sum(TicketOrder.refunded_amount))
        .where(TicketOrder.event_id.in_(ids), TicketOrder.status.in_(MONEY_TAKEN))
        .group_by(TicketOrder.ticket_id))} if ids else {}
    checked_in = dict(db.session.execute(
        select(TicketOrder.ticket_id, func.count(Admission.checked_in_at))
        .join(Admission, Admission.order_id == TicketOrder.id)
        .where(TicketOrder.event_id.in_(ids), Admission.void == false())
        .group_by(TicketOrder.ticket_id)).all()) if ids else {}
    result = []
    for event in events:
        stats = EventStats(event)
        for ticket in event.ticket_types:
            gross, refunded = money.get(ticket.id, (ZERO, ZERO))
            totals = Totals(ticket.capacity, ticket.sold_quantity, ticket.held_quantity, checked_in.get(ticket.id, 0),
                            Decimal(gross or 0), Decimal(refunded or 0))
            stats.tickets.append(TicketStats(ticket, totals))
            stats.totals.add(totals)
        result.append(stats)
    return result


def dashboard_events(limit=DASHBOARD_EVENTS):
    """Upcoming events (soonest first) then past ones (latest first), with their totals."""
    now = utcnow()
    upcoming = db.session.execute(
        select(Event).where(Event.starts_at > now).order_by(Event.starts_at, Event.id).limit(limit)
        .options(selectinload(Event.ticket_types))).scalars().all()
    past = db.session.execute(
        select(Event).where(Event.starts_at <= now).order_by(Event.starts_at.desc(), Event.id.desc())
        .limit(max(0, limit - len(upcoming))).options(selectinload(Event.ticket_types))).scalars().all()
    return _stats_for([*upcoming, *past])


def event_stats(event_id):
    """One event's :class:`EventStats`, or None."""
    event = db.session.execute(select(Event).where(Event.id == event_id)
                               .options(selectinload(Event.ticket_types))).scalar_one_or_none()
    return _stats_for([event])[0] if event else None


def _as_date(value):
    if isinstance(value, datetime):
        return value.date()
    return value if isinstance(value, date) else date.fromisoformat(str(value))


def sales_by_day(event_id=None, days=30, today=None):
    """``[(day, tickets sold that day), …]`` for every day of the period, oldest first (money taken only).

    For one event: from its first sale (at most a year back) to today; for the whole shop: the last ``days``.
    """
    today = today or utcnow().date()
    day = func.date(TicketOrder.paid_at)
    query = (select(day, func.sum(TicketOrder.quantity))
             .where(TicketOrder.paid_at.isnot(None), TicketOrder.status.in_(MONEY_TAKEN)).group_by(day))
    if event_id is None:
        since = datetime.combine(today - timedelta(days=days - 1), datetime.min.time())
        query = query.where(TicketOrder.paid_at >= since)
    else:
        query = query.where(TicketOrder.event_id == event_id)
    sold = {_as_date(d): int(n) for d, n in db.session.execute(query).all()}
    start = today - timedelta(days=days - 1) if event_id is None else min(sold, default=today)
    start = max(start, today - timedelta(days=365))
    end = max([today, *sold])
    return [(start + timedelta(n), sold.get(start + timedelta(n), 0)) for n in range((end - start).days + 1)]


def attention_list(limit=100):
    """Orders on the attention list, latest change first, with event and ticket type."""
    return db.session.execute(
        select(TicketOrder).where(TicketOrder.needs_attention == true())
        .options(joinedload(TicketOrder.event), joinedload(TicketOrder.ticket))
        .order_by(TicketOrder.updated_at.desc(), TicketOrder.id.desc()).limit(limit)).scalars().all()


def resolve_attention(order_id, note, actor):
    """Take an order off the attention list with what was done (audited); True if it was on it."""
    with transaction():
        reason = db.session.execute(select(TicketOrder.attention_reason).where(
            TicketOrder.id == order_id, TicketOrder.needs_attention == true())).scalar_one_or_none()
        resolved = reason is not None and db.session.execute(
            update(TicketOrder).where(TicketOrder.id == order_id, TicketOrder.needs_attention == true())
            .values(needs_attention=False)).rowcount == 1
        if resolved:
            record(actor, "attention.resolve", "order", order_id, before={"needs_attention": True},
                   after={"needs_attention": False}, note=f"{note} (it was: {reason})")
    return resolved


def find_orders(text, limit=SEARCH_LIMIT):
    """Orders matching an email (or its beginning), an order number (``123`` or ``#123``), a ticket code or
    a payment provider's reference; newest first."""
    text = (text or "").strip()
    if not text or len(text) > 255:
        return []
    wanted = [TicketOrder.email.like(_prefix(text.lower()), escape="\\"),
              TicketOrder.checkout_ref == text, TicketOrder.payment_ref == text,
              TicketOrder.id.in_(select(Admission.order_id).where(Admission.code == text.upper()))]
    number = ORDER_ID.fullmatch(text)
    if number:
        wanted.append(TicketOrder.id == int(number.group(1)))
    return db.session.execute(
        select(TicketOrder).where(or_(*wanted))
        .options(joinedload(TicketOrder.event), joinedload(TicketOrder.ticket))
        .order_by(TicketOrder.id.desc()).limit(limit)).scalars().all()


def _prefix(text):
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


@dataclass
class OrderStory:
    """An order with everything its console page shows."""
    order: TicketOrder
    history: list
    staff_actions: list


def order_story(order_id):
    """The order with event, ticket type, code, tickets (and who checked them in), its history and the staff
    actions on it; None for an unknown id."""
    order = db.session.execute(
        select(TicketOrder).where(TicketOrder.id == order_id)
        .options(joinedload(TicketOrder.event), joinedload(TicketOrder.ticket),
                 joinedload(TicketOrder.discount_code),
                 selectinload(TicketOrder.admissions).joinedload(Admission.checked_in_by_user))
    ).unique().scalar_one_or_none()
    if order is None:
        return None
    history = db.session.execute(
        select(OrderHistory).where(OrderHistory.order_id == order_id).options(joinedload(OrderHistory.actor))
        .order_by(OrderHistory.created_at, OrderHistory.id)).scalars().all()
    return OrderStory(order, history, entries("order", order_id))


def events_for_choice():
    """``[(id, title)]`` of every event, latest first (for a discount code's event)."""
    return db.session.execute(select(Event.id, Event.title).order_by(Event.starts_at.desc())).all()


def discount_codes():
    """Every discount code with its event, newest first."""
    return db.session.execute(select(DiscountCode, Event.title).outerjoin(Event, Event.id == DiscountCode.event_id)
                              .order_by(DiscountCode.id.desc())).all()
