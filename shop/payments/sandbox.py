"""Sandbox payments: a local stand-in for Stripe Checkout, used only when no Stripe key is set.

It keeps Stripe-shaped sessions, payment intents and charges in the ``sandbox_objects``
table, and its "Pay" button produces a ``checkout.session.completed`` event that goes
through exactly the same ``handle_stripe_event`` as a real webhook.
"""
import json
import secrets
import time

from flask import url_for

from ..extensions import db
from ..models import SandboxObject
from . import InvalidSignature, PaymentError
from .stripe_gateway import parse_envelope


def _new_id(prefix):
    return f"{prefix}_sandbox_{secrets.token_hex(12)}"


def sandbox_event(event_type, obj):
    """Wrap an object in a Stripe event, as Stripe's webhook delivers it."""
    return {
        "id": _new_id("evt"), "object": "event", "api_version": "2026-10-28", "created": int(time.time()),
        "livemode": False, "pending_webhooks": 1, "request": {"id": None, "idempotency_key": None},
        "type": event_type, "data": {"object": obj},
    }


class SandboxGateway:
    name = "sandbox"

    def _load(self, object_id):
        row = db.session.get(SandboxObject, object_id, populate_existing=True)
        if row is None:
            raise PaymentError(f"No such object: {object_id!r}")
        obj = json.loads(row.body)
        if obj.get("object") == "checkout.session" and obj["status"] == "open" and obj["expires_at"] <= time.time():
            # As at Stripe, a session past its expires_at is expired: the order's hold has ended.
            obj["status"] = "expired"
            self._save(obj)
        return obj

    def _save(self, obj):
        row = db.session.get(SandboxObject, obj["id"]) or SandboxObject(id=obj["id"])
        row.body = json.dumps(obj)
        db.session.add(row)
        db.session.commit()
        return obj

    def create_checkout_session(self, *, order, product_name, success_url, cancel_url, expires_at):
        session_id = _new_id("cs")
        return self._save({
            "id": session_id, "object": "checkout.session", "mode": "payment", "status": "open",
            "payment_status": "unpaid", "amount_subtotal": order.amount_minor, "amount_total": order.amount_minor,
            "currency": order.currency, "customer_email": order.email, "client_reference_id": str(order.id),
            "metadata": {"order_id": str(order.id), "event_id": str(order.event_id), "ticket_id": str(order.ticket_id)},
            "line_items": [{"description": product_name, "quantity": order.quantity,
                            "amount_total": order.amount_minor}],
            "payment_intent": None, "success_url": success_url, "cancel_url": cancel_url,
            "created": int(time.time()), "expires_at": int(expires_at), "livemode": False,
            "url": url_for("sandbox.pay", session_id=session_id, _external=True),
        })

    def retrieve_session(self, session_id):
        session = self._load(session_id)
        if session["payment_intent"]:
            intent = self._load(session["payment_intent"])
            intent["latest_charge"] = self._load(intent["latest_charge"])
            session["payment_intent"] = intent
        return session

    def expire_session(self, session_id):
        session = self._load(session_id)
        if session["status"] != "open":
            return None
        session["status"] = "expired"
        return self._save(session)

    def retrieve_payment_intent(self, payment_intent_id):
        intent = self._load(payment_intent_id)
        intent["latest_charge"] = self._load(intent["latest_charge"])
        return intent

    def complete_session(self, session_id):
        """What Stripe does when the buyer pays: the session completes, an intent and a charge exist.

        Returns the ``checkout.session.completed`` event, or raises PaymentError if the
        session is no longer open.
        """
        session = self._load(session_id)
        if session["status"] != "open":
            raise PaymentError(f"This checkout is {session['status']} and can no longer be paid.")
        amount = session["amount_total"]
        charge = self._save({"id": _new_id("ch"), "object": "charge", "amount": amount, "amount_refunded": 0,
                             "currency": session["currency"], "paid": True, "refunded": False, "status": "succeeded"})
        intent = self._save({"id": _new_id("pi"), "object": "payment_intent", "amount": amount,
                             "currency": session["currency"], "status": "succeeded", "latest_charge": charge["id"],
                             "metadata": {"order_id": session["metadata"]["order_id"]}})
        charge["payment_intent"] = intent["id"]
        self._save(charge)
        session.update(status="complete", payment_status="paid", payment_intent=intent["id"])
        return sandbox_event("checkout.session.completed", self._save(session))

    def refund(self, *, payment_intent_id, order_id, reason):
        intent = self._load(payment_intent_id)
        charge = self._load(intent["latest_charge"])
        if charge["refunded"]:
            raise PaymentError("This payment has already been refunded.")
        charge.update(amount_refunded=charge["amount"], refunded=True)
        self._save(charge)
        return {"id": _new_id("re"), "object": "refund", "amount": charge["amount"], "payment_intent": payment_intent_id,
                "charge": charge["id"], "status": "succeeded", "metadata": {"order_id": str(order_id), "reason": reason}}

    def check_credentials(self):
        return "sandbox payments (no STRIPE_SECRET_KEY): nothing is charged"

    def parse_webhook(self, payload, sig_header):
        raise InvalidSignature("the sandbox accepts no webhooks: set STRIPE_SECRET_KEY and STRIPE_WEBHOOK_SECRET")

    def parse_envelope(self, body):
        return parse_envelope(body)

    def __repr__(self):
        return "<SandboxGateway>"



