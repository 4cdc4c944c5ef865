"""Tickets where their holders find them: a page per admission, the calendar file, a guest's orders by email.

A ticket's code is its only key (``/tickets/<code>``): 80 random bits, so pages cannot be
found by guessing. A guest finds their orders again through a signed link mailed to the
address they bought with (:func:`lookup_link`), which lists that address's orders.
"""
import logging
import re
from dataclasses import dataclass, field
from datetime import timedelta

from flask import current_app
from icalendar import Calendar
from icalendar import Event as CalendarEvent
from sqlalchemy import select
from sqlalchemy.orm import joinedload, selectinload

from ..extensions import db
from ..models import Admission, AttendeeNames, OrderStatus, TicketOrder
from ..models.base import utcnow
from ..timezones import to_local
from ..urls import external_url
from . import links
from .transactions import transaction

logger = logging.getLogger(__name__)

# Codes are base32 (A–Z, 2–7) now and were hex before; people may type them in lower case or with spaces.
CODE = re.compile(r"[A-Z0-9]{8,32}")
LOOKUP = "order-lookup"
# Orders that never became tickets: shown apart, never like tickets.
NOT_TICKETS = (OrderStatus.CANCELLED, OrderStatus.EXPIRED, OrderStatus.FAILED)


def normalize_code(raw):
    """The code as stored (upper case, no spaces or dashes), or None when it cannot be one."""
    code = re.sub(r"[\s-]", "", raw or "").upper()
    return code if CODE.fullmatch(code) else None


def find_admission(code):
    """The admission with ``code``, its order, event and ticket type loaded (one indexed query), or None."""
    code = normalize_code(code)
    if code is None:
        return None
    return db.session.execute(
        select(Admission).where(Admission.code == code)
        .options(joinedload(Admission.order).joinedload(TicketOrder.event),
                 joinedload(Admission.order).joinedload(TicketOrder.ticket),
                 joinedload(Admission.item))).unique().scalar_one_or_none()


class NameNotChangeable(Exception):
    """The ticket's name cannot be set now; the message says why."""


def set_attendee_name(code, name):
    """Put ``name`` on the ticket ``code`` (whoever holds the code may), until its event starts; returns it.

    Raises NameNotChangeable for an event that asks for no names, one that has started, a void
    ticket, or a name that is too long (or empty where names are required).
    """
    name = (name or "").strip()
    with transaction():
        admission = find_admission(code)
        if admission is None:
            raise NameNotChangeable("There is no ticket with that code.")
        event = admission.order.event
        if event.names is AttendeeNames.NONE:
            raise NameNotChangeable("This event does not ask for names on tickets.")
        if event.has_started() or admission.void:
            raise NameNotChangeable("The name on this ticket can no longer be changed.")
        if len(name) > 120 or (not name and event.names is AttendeeNames.REQUIRED):
            raise NameNotChangeable("Enter a name of at most 120 characters.")
        admission.attendee_name = name or None
    logger.info("ticket %s (order %s): attendee name changed", admission.code, admission.order_id)
    return admission


def ticket_url(code):
    """The absolute address of a ticket's page (for emails and calendar files)."""
    return external_url("tickets.ticket", code=code)


def calendar_file(order, admissions=None):
    """The order's ``.ics`` (bytes): one VEVENT at the event's local time, with its zone's rules.

    Its UID is the order's, so importing a resent file updates the entry instead of adding one.
    ``admissions`` defaults to the order's own (pass them when they were issued in this transaction).
    """
    admissions = order.admissions if admissions is None else admissions
    event = order.event
    calendar = Calendar()
    calendar.add("prodid", "-//Ticket Shop//tickets//EN")
    calendar.add("version", "2.0")
    calendar.add("method", "PUBLISH")
    entry = CalendarEvent()
    base = current_app.config.get("SHOP_BASE_URL") or "localhost"
    entry.add("uid", f"order-{order.id}@{base.split('://')[-1]}")
    entry.add("dtstamp", to_local(utcnow(), "UTC"))
    entry.add("dtstart", to_local(event.starts_at, event.timezone))
    entry.add("summary", event.title)
    if event.venue:
        entry.add("location", event.venue)
    tickets = "\n".join(ticket_url(a.code) for a in admissions if not a.void)
    entry.add("description", f"Order #{order.id}: {order.summary}\n{tickets}".strip())
    calendar.add_component(entry)
    calendar.add_missing_timezones()
    return calendar.to_ical()


def lookup_link(email):
    """A signed link listing ``email``'s orders; it works for ``SHOP_LOOKUP_LINK_HOURS``."""
    return external_url("tickets.lookup_orders", token=links.sign(LOOKUP, email.strip().lower()))


def email_from_lookup(token):
    """The email a look-up link was made for; raises links.LinkExpired or links.LinkInvalid."""
    hours = current_app.config["SHOP_LOOKUP_LINK_HOURS"]
    email = links.unsign(LOOKUP, token, int(timedelta(hours=hours).total_seconds()))
    if not isinstance(email, str):
        raise links.LinkInvalid(LOOKUP)
    return email


def has_orders(email):
    """Whether any order was placed with ``email`` (an index range on the email column)."""
    return db.session.execute(select(TicketOrder.id).where(TicketOrder.email == email).limit(1)).first() is not None


def orders_for_email(email):
    """Every order placed with ``email``, with event, ticket type and admissions (two indexed queries)."""
    return db.session.execute(
        select(TicketOrder).where(TicketOrder.email == email)
        .options(joinedload(TicketOrder.event), joinedload(TicketOrder.ticket), selectinload(TicketOrder.admissions))
        .order_by(TicketOrder.created_at.desc(), TicketOrder.id.desc())).unique().scalars().all()


@dataclass
class EventGroup:
    """One event's orders on a profile or look-up page: tickets first, then what never became tickets."""
    event: object
    orders: list = field(default_factory=list)
    other_orders: list = field(default_factory=list)

    @property
    def tickets(self):
        return sum(1 for order in self.orders for admission in order.admissions if not admission.void)


def group_by_event(orders, now=None):
    """``(upcoming, past)`` event groups: upcoming soonest first, past most recent first.

    Cancelled, expired and failed orders go to each group's ``other_orders``; an event with
    only those still gets a group, so the buyer sees what became of them.
    """
    now = now or utcnow()
    groups = {}
    for order in orders:
        group = groups.setdefault(order.event_id, EventGroup(order.event))
        (group.other_orders if order.state in NOT_TICKETS else group.orders).append(order)
    upcoming = sorted((g for g in groups.values() if g.event.starts_at >= now), key=lambda g: g.event.starts_at)
    past = sorted((g for g in groups.values() if g.event.starts_at < now), key=lambda g: g.event.starts_at,
                  reverse=True)
    return upcoming, past
