"""Events, their ticket types and discount codes."""
import enum
from decimal import Decimal

from flask import current_app
from sqlalchemy import CheckConstraint, Index, false, func

from ..extensions import db
from .base import utcnow


def _default_timezone():
    return current_app.config.get("SHOP_TIMEZONE") or "UTC"


class EventStatus(str, enum.Enum):
    """A draft is seen by staff only (and cannot be bought); a published event is public."""
    DRAFT = "draft"
    PUBLISHED = "published"


class SaleState(str, enum.Enum):
    """Whether a ticket type can be bought now, and if not, why (the event page says which)."""
    ON_SALE = "on_sale"
    NOT_YET = "not_yet"        # before its on_sale_from
    CLOSED = "closed"          # after its on_sale_until
    STARTED = "started"        # the event has begun: sales always close then


class AttendeeNames(str, enum.Enum):
    """Whether an event asks for a name on each ticket: the organizer's choice."""
    NONE = "none"
    OPTIONAL = "optional"
    REQUIRED = "required"


class Event(db.Model):
    """An event; ``starts_at`` is naive UTC like every stored time, shown in the event's own ``timezone``."""
    __tablename__ = "events"
    __table_args__ = (Index("ix_events_status_starts", "status", "starts_at"),)

    id = db.Column(db.Integer, primary_key=True)
    title = db.Column(db.String(200), nullable=False)
    description = db.Column(db.Text, nullable=False, default="", server_default="")
    venue = db.Column(db.String(200), nullable=False, default="", server_default="")
    starts_at = db.Column(db.DateTime, nullable=False, index=True)
    # An IANA name (Europe/Berlin): pages, emails and calendar files show the start in it.
    timezone = db.Column(db.String(64), nullable=False, default=_default_timezone, server_default="UTC")
    created_at = db.Column(db.DateTime, nullable=False, default=utcnow, server_default=func.current_timestamp())
    # New events start as drafts: nothing is public or on sale until the organizer publishes it.
    status = db.Column(db.String(16), nullable=False, default=EventStatus.DRAFT.value, server_default="draft")
    # AttendeeNames: no names, names optional, or a name required on every ticket before paying.
    attendee_names = db.Column(db.String(16), nullable=False, default=AttendeeNames.NONE.value,
                               server_default="none")

    ticket_types = db.relationship("TicketType", back_populates="event", order_by="TicketType.price, TicketType.id")
    quotas = db.relationship("Quota", back_populates="event", order_by="Quota.id")

    @property
    def names(self):
        return AttendeeNames(self.attendee_names)

    @property
    def state(self):
        return EventStatus(self.status)

    @property
    def published(self):
        return self.state is EventStatus.PUBLISHED

    def has_started(self, now=None):
        return self.starts_at <= (now or utcnow())

    def __repr__(self):
        return f"<Event {self.id} {self.title!r}>"


class TicketType(db.Model):
    """A kind of ticket for one event (the existing system calls the table ``tickets``).

    ``sold_quantity`` counts paid seats; ``held_quantity`` counts seats held by pending or
    processing orders. Both only change under this row's lock, by the checkout (hold) and
    the order state machine, so ``capacity - sold - held`` is what is left to sell.
    """
    __tablename__ = "tickets"
    __table_args__ = (
        CheckConstraint("sold_quantity >= 0 AND held_quantity >= 0", name="ck_tickets_counts_non_negative"),
    )

    id = db.Column(db.Integer, primary_key=True)
    event_id = db.Column(db.Integer, db.ForeignKey("events.id"), nullable=False, index=True)
    name = db.Column(db.String(120), nullable=False)
    price = db.Column(db.Numeric(10, 2), nullable=False)
    capacity = db.Column(db.Integer, nullable=False)
    sold_quantity = db.Column(db.Integer, nullable=False, default=0, server_default="0")
    held_quantity = db.Column(db.Integer, nullable=False, default=0, server_default="0")
    # The sales window (naive UTC, either end open); sales close at the event's start whatever it says.
    on_sale_from = db.Column(db.DateTime, nullable=True)
    on_sale_until = db.Column(db.DateTime, nullable=True)
    # Hidden ticket types are not shown or sold to the public (a staff allocation, a type withdrawn).
    hidden = db.Column(db.Boolean, nullable=False, default=False, server_default="0")

    event = db.relationship("Event", back_populates="ticket_types")
    # The shared limits this type counts against, loaded in one more query for a page's types.
    quotas = db.relationship("Quota", secondary="quota_tickets", back_populates="ticket_types", lazy="selectin",
                             order_by="Quota.id")

    @property
    def remaining(self):
        """What is left to sell: the smallest remaining limit, its own capacity or a quota it shares."""
        own = max(0, self.capacity - self.sold_quantity - self.held_quantity)
        return min([own, *(quota.remaining for quota in self.quotas)])

    def sale_state(self, now=None):
        """The :class:`SaleState` now (needs ``event`` loaded)."""
        now = now or utcnow()
        if self.event.has_started(now):
            return SaleState.STARTED
        if self.on_sale_from is not None and now < self.on_sale_from:
            return SaleState.NOT_YET
        if self.on_sale_until is not None and now >= self.on_sale_until:
            return SaleState.CLOSED
        return SaleState.ON_SALE


quota_tickets = db.Table(
    "quota_tickets",
    db.Column("quota_id", db.Integer, db.ForeignKey("quotas.id"), primary_key=True),
    db.Column("ticket_id", db.Integer, db.ForeignKey("tickets.id"), primary_key=True, index=True),
)


class Quota(db.Model):
    """A limit shared by several ticket types of one event ("floor: 300" over standing and early bird).

    Its counters move with its types' counters, in the same transaction, by the same conditional
    UPDATEs (services/orders.py), always after the ticket rows (by id) and before the discount.
    An event-wide capacity is a quota over all of the event's types (``event_wide``): a ticket type
    added to the event later joins it.
    """
    __tablename__ = "quotas"
    __table_args__ = (
        CheckConstraint("sold_quantity >= 0 AND held_quantity >= 0", name="ck_quotas_counts_non_negative"),
    )

    id = db.Column(db.Integer, primary_key=True)
    event_id = db.Column(db.Integer, db.ForeignKey("events.id"), nullable=False, index=True)
    name = db.Column(db.String(120), nullable=False)
    capacity = db.Column(db.Integer, nullable=False)
    sold_quantity = db.Column(db.Integer, nullable=False, default=0, server_default="0")
    held_quantity = db.Column(db.Integer, nullable=False, default=0, server_default="0")
    event_wide = db.Column(db.Boolean, nullable=False, default=False, server_default=false())

    event = db.relationship("Event", back_populates="quotas")
    ticket_types = db.relationship("TicketType", secondary="quota_tickets", back_populates="quotas",
                                   order_by="TicketType.id")

    @property
    def remaining(self):
        return max(0, self.capacity - self.sold_quantity - self.held_quantity)


class DiscountCode(db.Model):
    """A code taking ``percent_off`` or ``amount_off`` off the unit price.

    Codes are stored upper-case and looked up upper-case, which makes them case-insensitive
    on every database. ``used_count`` counts paid orders; ``reserved_count`` counts live
    holds, so ``max_uses`` can never be exceeded by a rush of concurrent checkouts.
    """
    __tablename__ = "discount_codes"
    __table_args__ = (
        CheckConstraint("(percent_off IS NULL) <> (amount_off IS NULL)", name="ck_discount_one_kind"),
        CheckConstraint("used_count >= 0 AND reserved_count >= 0", name="ck_discount_counts_non_negative"),
    )

    id = db.Column(db.Integer, primary_key=True)
    code = db.Column(db.String(64), nullable=False, unique=True)
    percent_off = db.Column(db.Integer, nullable=True)
    amount_off = db.Column(db.Numeric(10, 2), nullable=True)
    max_uses = db.Column(db.Integer, nullable=True)
    used_count = db.Column(db.Integer, nullable=False, default=0, server_default="0")
    reserved_count = db.Column(db.Integer, nullable=False, default=0, server_default="0")
    event_id = db.Column(db.Integer, db.ForeignKey("events.id"), nullable=True, index=True)
    valid_from = db.Column(db.DateTime, nullable=True)
    valid_until = db.Column(db.DateTime, nullable=True)

    @staticmethod
    def normalize(code):
        return (code or "").strip().upper()

    def discounted_price(self, unit_price):
        """The unit price after this discount, never below zero, rounded down to the cent (in the buyer's favour)."""
        unit_price = Decimal(unit_price)
        if self.percent_off is not None:
            off = unit_price * Decimal(self.percent_off) / 100
            price = unit_price - off
        else:
            price = unit_price - Decimal(self.amount_off)
        return max(Decimal("0.00"), price.quantize(Decimal("0.01"), rounding="ROUND_FLOOR"))

    def describe(self):
        return f"{self.percent_off}% off" if self.percent_off is not None else f"{self.amount_off} off"


Index("ix_events_upcoming", Event.starts_at, Event.id)
