"""Reading the catalogue: what is on sale and how many seats remain.

The public sees published events and their ticket types that are not hidden; staff also see
drafts (a preview) and hidden ticket types.
"""
from sqlalchemy import false, func, select
from sqlalchemy.orm import selectinload

from ..extensions import db
from ..models import Event, EventStatus, TicketType
from ..models.base import utcnow

EVENTS_PER_PAGE = 20


def upcoming_events(page=1, per_page=EVENTS_PER_PAGE):
    """``(rows, has_next)``: one page of published events that have not started yet, soonest first, each row
    ``(event, lowest price, seats left)`` over its visible ticket types (two queries).

    The page is a range of the (status, starts_at) index, and only its events' ticket types are summed:
    neither the years of past events nor the upcoming ones on later pages come into it.
    """
    events = db.session.execute(
        select(Event).where(Event.status == EventStatus.PUBLISHED.value, Event.starts_at > utcnow())
        .order_by(Event.starts_at, Event.id).limit(per_page + 1).offset((page - 1) * per_page)).scalars().all()
    shown = events[:per_page]
    totals = {event_id: (price, left) for event_id, price, left in db.session.execute(
        select(TicketType.event_id, func.min(TicketType.price),
               func.sum(TicketType.capacity - TicketType.sold_quantity - TicketType.held_quantity))
        .where(TicketType.event_id.in_([e.id for e in shown]), TicketType.hidden == false())
        .group_by(TicketType.event_id))} if shown else {}
    rows = [(event, *totals.get(event.id, (None, 0))) for event in shown]
    return [(event, price, max(0, int(left or 0))) for event, price, left in rows], len(events) > per_page


def event_with_tickets(event_id):
    """One event with its ticket types loaded (two indexed queries), or None."""
    return db.session.execute(
        select(Event).where(Event.id == event_id).options(selectinload(Event.ticket_types))
    ).scalar_one_or_none()


def visible_event(event_id, staff=False):
    """``(event, ticket types to show)`` for a viewer, or None: drafts and hidden types are for ``staff`` only."""
    event = event_with_tickets(event_id)
    if event is None or not (event.published or staff):
        return None
    return event, [t for t in event.ticket_types if staff or not t.hidden]
