"""Reading the catalogue: what is on sale and how many seats remain."""
from sqlalchemy import func, select
from sqlalchemy.orm import selectinload

from ..extensions import db
from ..models import Event, TicketType
from ..models.base import utcnow


def upcoming_events():
    """Events that have not started yet, soonest first, each with its lowest price and seats left (one query)."""
    rows = db.session.execute(
        select(Event, func.min(TicketType.price),
               func.sum(TicketType.capacity - TicketType.sold_quantity - TicketType.held_quantity))
        .outerjoin(TicketType, TicketType.event_id == Event.id)
        .where(Event.starts_at > utcnow()).group_by(Event.id).order_by(Event.starts_at, Event.id)).all()
    return [(event, price, max(0, int(left or 0))) for event, price, left in rows]


def event_with_tickets(event_id):
    """One event with its ticket types loaded (two indexed queries), or None."""
    return db.session.execute(
        select(Event).where(Event.id == event_id).options(selectinload(Event.ticket_types))
    ).scalar_one_or_none()
