"""Stripe events as they reached us, keyed by Stripe's own event id (dj-stripe's habit)."""
from sqlalchemy import func
from sqlalchemy.dialects.mysql import MEDIUMTEXT

from ..extensions import db
from .base import utcnow


class StripeEvent(db.Model):
    """One Stripe event, stored once whichever path delivered it first.

    The primary key is Stripe's ``evt_…`` id, so a second delivery fails the insert and is
    recognised as a duplicate by the database itself, not by a check-then-insert race.
    ``processed_at`` stays empty until processing committed; a delivery that finds a row
    without it (the first attempt failed) processes the event again.
    """
    __tablename__ = "stripe_events"

    id = db.Column(db.String(255), primary_key=True)
    type = db.Column(db.String(100), nullable=False)
    delivered_by = db.Column(db.String(32), nullable=False)
    received_at = db.Column(db.DateTime, nullable=False, default=utcnow, server_default=func.current_timestamp(), index=True)
    processed_at = db.Column(db.DateTime, nullable=True)
    order_id = db.Column(db.Integer, nullable=True, index=True)
    outcome = db.Column(db.String(64), nullable=False, default="", server_default="")
    error = db.Column(db.Text, nullable=True)
    payload = db.Column(db.Text().with_variant(MEDIUMTEXT(), "mysql", "mariadb"), nullable=True)  # TEXT caps at 64 KB


class DeliveryPath(db.Model):
    """When each inlet (webhook, eventbridge, success_page, sandbox, …) last brought an event, for ``doctor``."""
    __tablename__ = "delivery_paths"

    name = db.Column(db.String(32), primary_key=True)
    last_delivered_at = db.Column(db.DateTime, nullable=False)
    deliveries = db.Column(db.Integer, nullable=False, default=0, server_default="0")
