"""The outbox: every email the shop sends, written in the same transaction as the change that causes it.

A sender thread in each server process claims due rows with a conditional UPDATE (the
affected-row count decides, so two processes never send one message), sends them with no
transaction open, and records the result. A failed attempt is retried later, each wait
twice the one before; after ``SHOP_MAIL_MAX_ATTEMPTS`` the message stays ``failed``, for
``doctor`` and ``flask shop outbox`` to show.
"""
import enum

from sqlalchemy import Index, func
from sqlalchemy.dialects.mysql import MEDIUMTEXT

from ..extensions import db
from .base import utcnow

LONG_TEXT = db.Text().with_variant(MEDIUMTEXT(), "mysql", "mariadb")  # TEXT caps at 64 KB


class OutboxStatus(str, enum.Enum):
    WAITING = "waiting"     # due at ``next_attempt_at``
    SENDING = "sending"     # claimed by a sender until ``claimed_until``
    SENT = "sent"           # the mail server accepted it
    LOGGED = "logged"       # no MAIL_SERVER: written to the log instead (the embedded default)
    FAILED = "failed"       # refused for good, or out of attempts: a person has to look


class MessageKind(str, enum.Enum):
    ORDER_CONFIRMATION = "order_confirmation"
    TICKETS_RESENT = "tickets_resent"
    REFUND_NOTICE = "refund_notice"
    PAYMENT_FAILED = "payment_failed"
    ORDER_LOOKUP = "order_lookup"
    VERIFY_EMAIL = "verify_email"
    PASSWORD_RESET = "password_reset"


class OutboxMessage(db.Model):
    __tablename__ = "outbox"
    __table_args__ = (
        # The sender's one query: what is due, oldest first.
        Index("ix_outbox_status_due", "status", "next_attempt_at"),
    )

    id = db.Column(db.Integer, primary_key=True)
    kind = db.Column(db.String(32), nullable=False)
    # One message per cause (``order_confirmation:42``): a second insert fails on the key, so
    # news arriving five times still sends one confirmation. Resends and look-ups have none.
    dedupe_key = db.Column(db.String(100), nullable=True, unique=True)
    order_id = db.Column(db.Integer, nullable=True, index=True)
    recipient = db.Column(db.String(255), nullable=False)
    subject = db.Column(db.String(255), nullable=False)
    body_text = db.Column(LONG_TEXT, nullable=False)
    body_html = db.Column(LONG_TEXT, nullable=False)
    # JSON: [{"filename": …, "content_type": …, "content": text}] (the order's calendar file).
    attachments = db.Column(LONG_TEXT, nullable=False, default="[]")
    status = db.Column(db.String(16), nullable=False, default=OutboxStatus.WAITING.value,
                       server_default=OutboxStatus.WAITING.value)
    attempts = db.Column(db.Integer, nullable=False, default=0, server_default="0")
    next_attempt_at = db.Column(db.DateTime, nullable=False, default=utcnow, server_default=func.current_timestamp())
    claim_token = db.Column(db.String(32), nullable=True)
    claimed_until = db.Column(db.DateTime, nullable=True)
    last_error = db.Column(db.Text, nullable=True)
    created_at = db.Column(db.DateTime, nullable=False, default=utcnow, server_default=func.current_timestamp())
    sent_at = db.Column(db.DateTime, nullable=True)

    @property
    def state(self):
        return OutboxStatus(self.status)

    def __repr__(self):
        return f"<OutboxMessage {self.id} {self.kind} {self.status}>"
