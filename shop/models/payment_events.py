"""The payment provider's events as they reached us, and the typed outcome of each (dj-stripe's event store).

The table keeps the name the system this replaces gave it (``stripe_events``): operators
query it. It holds any provider's events, keyed by the provider's own event id.
"""
import enum
from dataclasses import dataclass

from sqlalchemy import Index, func
from sqlalchemy.dialects.mysql import MEDIUMTEXT

from ..extensions import db
from .base import utcnow
from .orders import OrderStatus


class OutcomeKind(str, enum.Enum):
    """What became of one piece of news about an order."""
    APPLIED = "applied"        # the order moved (or recorded a refund) as the provider says
    UNCHANGED = "unchanged"    # the order already agreed, the checkout is still open, or the news was stale
    IGNORED = "ignored"        # nothing of ours to act on
    DUPLICATE = "duplicate"    # this event was processed before
    FLAGGED = "flagged"        # put on the attention list: a person has to look


class OutcomeReason(str, enum.Enum):
    """Why, in one word an operator can query (``doctor`` and the tests do)."""
    STATE_CHANGED = "state_changed"
    PARTIAL_REFUND = "partial_refund"
    LATE_PAYMENT_REFUNDED = "late_payment_refunded"     # paid past a limit (seats, discount uses): refunded
    ALREADY = "already"
    STILL_OPEN = "still_open"
    STALE = "stale"                                     # would move the order backwards
    AWAITING_DELAYED_PAYMENT = "awaiting_delayed_payment"
    RELEASED = "released"                               # a hold without a checkout ended
    NOT_HANDLED = "not_handled"                         # an event type we do not act on
    NO_REFERENCE = "no_reference"                       # the event names no checkout or payment
    NOT_OURS = "not_ours"                               # the provider has no such object
    NO_ORDER_ID = "no_order_id"                         # the checkout carries no order id
    UNKNOWN_ORDER = "unknown_order"
    MISMATCH = "mismatch"                               # amount, currency, checkout or token differ
    REFUND_FAILED = "refund_failed"
    DUPLICATE = "duplicate"


@dataclass(frozen=True)
class Outcome:
    """The typed result of applying news to an order; stored in ``stripe_events``' outcome columns."""
    kind: OutcomeKind
    reason: OutcomeReason
    status: OrderStatus | None = None   # the order's status afterwards, when there is an order
    detail: str = ""

    @property
    def label(self):
        """Short text for logs and the webhook's answer: the new status when the order moved."""
        if self.kind is OutcomeKind.APPLIED and self.reason is OutcomeReason.STATE_CHANGED:
            return self.status.value
        return self.kind.value if self.kind is OutcomeKind.DUPLICATE else f"{self.kind.value}: {self.reason.value}"

    def __str__(self):
        return f"{self.label} ({self.detail})" if self.detail else self.label


class PaymentEvent(db.Model):
    """One provider event, stored once whichever path delivered it first.

    The primary key is the provider's event id, so a second delivery fails the insert and
    is recognised as a duplicate by the database itself, not by a check-then-insert race.
    ``processed_at`` stays empty until processing committed; a delivery that finds a row
    without it (the first attempt failed) processes the event again. ``delivered_by`` is
    the path that first brought it, ``processed_by`` the one whose processing committed.
    """
    __tablename__ = "stripe_events"
    __table_args__ = (Index("ix_stripe_events_outcome", "outcome_reason", "received_at"),
                      Index("ix_stripe_events_processed", "processed_at", "received_at"))

    id = db.Column(db.String(255), primary_key=True)
    type = db.Column(db.String(100), nullable=False)
    delivered_by = db.Column(db.String(32), nullable=False)
    processed_by = db.Column(db.String(32), nullable=True)
    received_at = db.Column(db.DateTime, nullable=False, default=utcnow, server_default=func.current_timestamp(),
                            index=True)
    processed_at = db.Column(db.DateTime, nullable=True)
    order_id = db.Column(db.Integer, nullable=True, index=True)
    outcome = db.Column(db.String(64), nullable=False, default="", server_default="")  # the label, for people
    outcome_kind = db.Column(db.String(16), nullable=True)
    outcome_reason = db.Column(db.String(32), nullable=True)
    outcome_status = db.Column(db.String(16), nullable=True)
    error = db.Column(db.Text, nullable=True)
    payload = db.Column(db.Text().with_variant(MEDIUMTEXT(), "mysql", "mariadb"), nullable=True)  # TEXT caps at 64 KB

    @property
    def result(self):
        """The stored :class:`Outcome`, or None while unprocessed."""
        if self.outcome_kind is None:
            return None
        return Outcome(OutcomeKind(self.outcome_kind), OutcomeReason(self.outcome_reason),
                       OrderStatus(self.outcome_status) if self.outcome_status else None)


class DeliveryPath(db.Model):
    """When each inlet (webhook, eventbridge, success_page, sandbox, …) last brought news, for ``doctor``."""
    __tablename__ = "delivery_paths"

    name = db.Column(db.String(32), primary_key=True)
    last_delivered_at = db.Column(db.DateTime, nullable=False)
    deliveries = db.Column(db.Integer, nullable=False, default=0, server_default="0")
