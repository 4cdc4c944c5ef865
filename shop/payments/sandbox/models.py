"""The sandbox provider's one table: the checkouts it opened, in the shop's own terms."""
from sqlalchemy import func

from ...extensions import db
from ...models.base import utcnow


class SandboxCheckout(db.Model):
    """A payment page the sandbox opened for an order, and what the pretend buyer did on it."""
    __tablename__ = "sandbox_checkouts"

    ref = db.Column(db.String(64), primary_key=True)
    order_id = db.Column(db.Integer, nullable=False, index=True)
    order_token = db.Column(db.String(64), nullable=False)
    idempotency_key = db.Column(db.String(64), nullable=False, unique=True)
    email = db.Column(db.String(255), nullable=False)
    description = db.Column(db.Text, nullable=False)
    amount = db.Column(db.Numeric(10, 2), nullable=False)
    currency = db.Column(db.String(3), nullable=False)
    status = db.Column(db.String(16), nullable=False, default="open", server_default="open")  # open | paid | expired
    payment_ref = db.Column(db.String(64), nullable=True, unique=True)
    refunded = db.Column(db.Numeric(10, 2), nullable=False, default=0, server_default="0")
    success_url = db.Column(db.String(2000), nullable=False)
    cancel_url = db.Column(db.String(2000), nullable=False)
    expires_at = db.Column(db.DateTime, nullable=False)
    created_at = db.Column(db.DateTime, nullable=False, default=utcnow, server_default=func.current_timestamp())
