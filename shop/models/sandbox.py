"""Objects of the sandbox payment provider, which stands in for Stripe when no key is set."""
from ..extensions import db


class SandboxObject(db.Model):
    """A Stripe-shaped object (checkout.session, payment_intent, charge) kept as JSON."""
    __tablename__ = "sandbox_objects"

    id = db.Column(db.String(64), primary_key=True)
    body = db.Column(db.Text, nullable=False)
