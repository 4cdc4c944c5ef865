"""Ticket orders, their states, and the admission tickets a paid order carries."""
import enum

from sqlalchemy import Index, UniqueConstraint, func

from ..extensions import db
from .base import utcnow


class OrderStatus(str, enum.Enum):
    """The one definition of an order's states and the moves between them.

    ``services.orders.change_status`` is the only code that moves an order, and it refuses
    any move not listed in ``TRANSITIONS``.
    """
    PENDING = "pending"          # seats held, waiting for the buyer to pay on Stripe
    PROCESSING = "processing"    # paid with a delayed method (bank debit); seats still held
    PAID = "paid"
    EXPIRED = "expired"          # the Checkout Session ran out; seats released
    CANCELLED = "cancelled"      # the buyer left Stripe's page through "back"; seats released
    FAILED = "failed"            # the delayed payment failed, or Stripe refused the checkout
    REFUNDED = "refunded"

    @property
    def holds_seats(self):
        return self in (OrderStatus.PENDING, OrderStatus.PROCESSING)

    @property
    def label(self):
        return STATUS_LABELS[self]


STATUS_LABELS = {
    OrderStatus.PENDING: "Awaiting payment",
    OrderStatus.PROCESSING: "Payment processing — your seats are held",
    OrderStatus.PAID: "Paid",
    OrderStatus.EXPIRED: "Expired — the checkout timed out, nothing was charged",
    OrderStatus.CANCELLED: "Cancelled — nothing was charged",
    OrderStatus.FAILED: "Payment failed — nothing was charged",
    OrderStatus.REFUNDED: "Refunded",
}

_RELEASED = (OrderStatus.EXPIRED, OrderStatus.CANCELLED, OrderStatus.FAILED)

TRANSITIONS = {
    # Straight to refunded when the refund's event (or Stripe's view) arrives before the payment's.
    OrderStatus.PENDING: {OrderStatus.PROCESSING, OrderStatus.PAID, OrderStatus.REFUNDED, *_RELEASED},
    OrderStatus.PROCESSING: {OrderStatus.PAID, OrderStatus.FAILED, OrderStatus.REFUNDED},
    OrderStatus.PAID: {OrderStatus.REFUNDED},
    # A payment can still arrive after the hold ended (Stripe's session outlived it, or
    # events came out of order): it becomes paid if seats remain, or is refunded.
    # The buyer's cancel expires the session, and Stripe's expiry event may land first.
    OrderStatus.EXPIRED: {OrderStatus.PAID, OrderStatus.REFUNDED, OrderStatus.PROCESSING, OrderStatus.CANCELLED},
    OrderStatus.CANCELLED: {OrderStatus.PAID, OrderStatus.REFUNDED, OrderStatus.PROCESSING},
    OrderStatus.FAILED: {OrderStatus.PAID, OrderStatus.REFUNDED},
    OrderStatus.REFUNDED: set(),
}


class TicketOrder(db.Model):
    __tablename__ = "ticket_orders"
    __table_args__ = (
        Index("ix_ticket_orders_user_created", "user_id", "created_at"),
        Index("ix_ticket_orders_status_hold", "status", "hold_expires_at"),
        Index("ix_ticket_orders_paid", "paid_at", "status", "quantity"),  # sales per day, index only
        # The pending caps count a buyer's and an address's live holds (services/checkout.py).
        Index("ix_ticket_orders_email_status", "email", "status", "hold_expires_at"),
        Index("ix_ticket_orders_ip_status", "client_ip", "status", "hold_expires_at"),
    )

    id = db.Column(db.Integer, primary_key=True)
    event_id = db.Column(db.Integer, db.ForeignKey("events.id"), nullable=False, index=True)
    ticket_id = db.Column(db.Integer, db.ForeignKey("tickets.id"), nullable=False, index=True)
    user_id = db.Column(db.Integer, db.ForeignKey("users.id"), nullable=True)
    email = db.Column(db.String(255), nullable=False)
    quantity = db.Column(db.Integer, nullable=False)
    unit_price = db.Column(db.Numeric(10, 2), nullable=False)
    discount_code_id = db.Column(db.Integer, db.ForeignKey("discount_codes.id"), nullable=True)
    total_amount = db.Column(db.Numeric(10, 2), nullable=False)
    currency = db.Column(db.String(3), nullable=False)
    status = db.Column(db.String(16), nullable=False, default=OrderStatus.PENDING.value, server_default="pending")
    # The provider's references; the columns keep the names the system this replaces gave them.
    checkout_ref = db.Column("stripe_checkout_session_id", db.String(255), nullable=True, unique=True)
    payment_ref = db.Column("stripe_payment_intent_id", db.String(255), nullable=True, index=True)
    created_at = db.Column(db.DateTime, nullable=False, default=utcnow, server_default=func.current_timestamp())
    paid_at = db.Column(db.DateTime, nullable=True)
    # Columns beyond the existing system's all have defaults, so rows written by older code still load.
    hold_expires_at = db.Column(db.DateTime, nullable=True)
    refunded_amount = db.Column(db.Numeric(10, 2), nullable=False, default=0, server_default="0")
    needs_attention = db.Column(db.Boolean, nullable=False, default=False, server_default="0", index=True)
    attention_reason = db.Column(db.String(255), nullable=False, default="", server_default="")
    # When the sweeper last asked Stripe about this pending order (it heals orders no event settled).
    checked_at = db.Column(db.DateTime, nullable=True)
    # The buyer's address (after the trusted proxies), for the per-address cap on live holds.
    client_ip = db.Column(db.String(45), nullable=True)
    # Where the buyer pays while the hold lasts: "resume" on the profile sends them back there.
    checkout_url = db.Column(db.String(2000), nullable=True)
    updated_at = db.Column(db.DateTime, nullable=False, default=utcnow, onupdate=utcnow,
                           server_default=func.current_timestamp())

    # Loaded on demand: the checkout and the state machine never need them, the pages join them in.
    event = db.relationship("Event")
    ticket = db.relationship("TicketType")
    discount_code = db.relationship("DiscountCode")
    admissions = db.relationship("Admission", back_populates="order", order_by="Admission.id")
    # Loaded with the order in one more query (never one per order in a list): every page and the state
    # machine need the lines. Ordered by ticket type, the order every lock is taken in.
    items = db.relationship("OrderItem", back_populates="order", order_by="OrderItem.ticket_id", lazy="selectin")

    @property
    def state(self):
        return OrderStatus(self.status)

    @property
    def holds_seats(self):
        """Its seats are counted in the ticket type's ``held_quantity``. Orders written before holds
        existed have no ``hold_expires_at`` and never held any."""
        return self.state.holds_seats and self.hold_expires_at is not None

    @property
    def summary(self):
        """``2 × Adult, 1 × Child``: what the order is, for pages and mails."""
        return ", ".join(f"{item.quantity} × {item.ticket.name}" for item in self.items)

    @property
    def partially_refunded(self):
        return self.state is OrderStatus.PAID and self.refunded_amount > 0

    def __repr__(self):
        return f"<TicketOrder {self.id} {self.status}>"


class OrderItem(db.Model):
    """One line of an order: a quantity of one ticket type at the unit price paid, after ``discount_amount``.

    ``ticket_orders.quantity`` is the sum of an order's lines; the seat counters move per line.
    """
    __tablename__ = "order_items"
    __table_args__ = (UniqueConstraint("order_id", "ticket_id", name="uq_order_items_order_ticket"),)

    id = db.Column(db.Integer, primary_key=True)
    order_id = db.Column(db.Integer, db.ForeignKey("ticket_orders.id"), nullable=False)
    ticket_id = db.Column(db.Integer, db.ForeignKey("tickets.id"), nullable=False, index=True)
    quantity = db.Column(db.Integer, nullable=False)
    unit_price = db.Column(db.Numeric(10, 2), nullable=False)          # what one ticket of this line costs
    discount_amount = db.Column(db.Numeric(10, 2), nullable=False, default=0, server_default="0")  # off each
    # Set when the line alone was refunded (services/refunds.py ``refund_order_line``): its seats went back then.
    refunded_quantity = db.Column(db.Integer, nullable=False, default=0, server_default="0")
    # The names given per ticket before paying, one a line; the admissions take them when issued.
    attendee_names = db.Column(db.Text, nullable=True)

    order = db.relationship("TicketOrder", back_populates="items")
    ticket = db.relationship("TicketType", lazy="joined")

    @property
    def total(self):
        return self.unit_price * self.quantity


class AdmissionState(str, enum.Enum):
    """What a ticket page says about one admission."""
    VALID = "valid"
    VOID = "void"               # its order was refunded
    CHECKED_IN = "checked_in"   # scanned at the door

    @property
    def label(self):
        return {"valid": "Valid", "void": "Void — refunded", "checked_in": "Checked in"}[self.value]


class Admission(db.Model):
    """One admission ticket of a paid order: what an attendee shows at the door.

    ``code`` is the ticket's only secret: its page (``/tickets/<code>``) is reached by it alone.
    """
    __tablename__ = "admissions"

    id = db.Column(db.Integer, primary_key=True)
    order_id = db.Column(db.Integer, db.ForeignKey("ticket_orders.id"), nullable=False, index=True)
    # The order line (and so the ticket type) this admission belongs to.
    order_item_id = db.Column(db.Integer, db.ForeignKey("order_items.id"), nullable=True, index=True)
    code = db.Column(db.String(32), nullable=False, unique=True)
    # Who will use this ticket, when the event asks for names (services/tickets.py set_attendee_name).
    attendee_name = db.Column(db.String(120), nullable=True)
    void = db.Column(db.Boolean, nullable=False, default=False, server_default="0")
    # Set once at the door by a conditional UPDATE (services/checkin.py); cleared only by an audited undo.
    checked_in_at = db.Column(db.DateTime, nullable=True)
    checked_in_by = db.Column(db.Integer, db.ForeignKey("users.id"), nullable=True)

    order = db.relationship("TicketOrder", back_populates="admissions")
    item = db.relationship("OrderItem")
    checked_in_by_user = db.relationship("User")

    @property
    def ticket_name(self):
        """The name of its ticket type: its order line's (admissions from before lines existed: the order's)."""
        return (self.item or self.order).ticket.name

    @property
    def state(self):
        if self.void:
            return AdmissionState.VOID
        if self.checked_in_at is not None:
            return AdmissionState.CHECKED_IN
        return AdmissionState.VALID


class OrderHistory(db.Model):
    """One line of an order's timeline, written by ``services.orders.change_status`` (and by fulfilment
    when a partial refund is recorded): what changed, what caused it, and through which path."""
    __tablename__ = "order_history"

    id = db.Column(db.Integer, primary_key=True)
    order_id = db.Column(db.Integer, db.ForeignKey("ticket_orders.id"), nullable=False, index=True)
    from_status = db.Column(db.String(16), nullable=True)
    to_status = db.Column(db.String(16), nullable=False)
    # The inlet or actor: webhook, eventbridge, success_page, sandbox, cancel_page, sweeper, checkout, cli, console.
    source = db.Column(db.String(32), nullable=False, default="", server_default="")
    cause = db.Column(db.String(255), nullable=False, default="", server_default="")
    actor_id = db.Column(db.Integer, db.ForeignKey("users.id"), nullable=True)
    created_at = db.Column(db.DateTime, nullable=False, default=utcnow, server_default=func.current_timestamp())

    actor = db.relationship("User")


class RefundRequest(db.Model):
    """A refund asked of the provider by staff (console or CLI), stored once per idempotency key.

    The unique key is what makes a double click one refund, even with a provider (the sandbox)
    that keeps no idempotency keys of its own; two deliberate partial refunds carry two keys.
    """
    __tablename__ = "refund_requests"

    id = db.Column(db.Integer, primary_key=True)
    idempotency_key = db.Column(db.String(128), nullable=False, unique=True)
    order_id = db.Column(db.Integer, db.ForeignKey("ticket_orders.id"), nullable=False, index=True)
    amount = db.Column(db.Numeric(10, 2), nullable=True)   # NULL: everything left
    reason = db.Column(db.String(255), nullable=False, default="", server_default="")
    requested_by = db.Column(db.Integer, db.ForeignKey("users.id"), nullable=True)
    created_at = db.Column(db.DateTime, nullable=False, default=utcnow, server_default=func.current_timestamp())
