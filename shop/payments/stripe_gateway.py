"""Stripe, through the official library's ``StripeClient``. Nothing else in the shop imports ``stripe``."""
import contextlib
import json
import logging

import stripe

from . import InvalidPayload, InvalidSignature, PaymentError, PaymentUnavailable

logger = logging.getLogger(__name__)

# Expanding the intent and its charge lets one retrieve answer every question fulfilment
# asks: paid? processing? failed? refunded, and how much?
SESSION_EXPAND = ["payment_intent", "payment_intent.latest_charge"]


@contextlib.contextmanager
def _translated_errors():
    try:
        yield
    except (stripe.APIConnectionError, stripe.RateLimitError) as exc:
        raise PaymentUnavailable(f"Stripe could not be reached: {exc.user_message or exc}") from exc
    except stripe.APIError as exc:
        raise PaymentUnavailable(f"Stripe answered with an error: {exc.user_message or exc}") from exc
    except stripe.StripeError as exc:
        raise PaymentError(f"Stripe refused the request: {exc.user_message or exc}") from exc


def _plain(obj):
    return obj.to_dict(recursive=True, for_json=True) if obj is not None else None


def _plain_event(event):
    """An event as plain JSON data. Its payload is arbitrary, and ``to_dict()`` leaves StripeObjects
    inside lists of lists, so a JSON round trip converts every level."""
    return json.loads(json.dumps(_plain(event), default=lambda o: o.to_dict(recursive=True, for_json=True)))


class StripeGateway:
    """Real Stripe (or a Stripe-compatible server at ``STRIPE_API_BASE``)."""

    name = "stripe"

    def __init__(self, settings):
        base = {"api": settings.api_base} if settings.api_base else None
        # The library retries connection errors itself, re-sending the same idempotency key.
        self.client = stripe.StripeClient(settings.secret_key, base_addresses=base, max_network_retries=1)
        self.webhook_secret = settings.webhook_secret

    def create_checkout_session(self, *, order, product_name, success_url, cancel_url, expires_at):
        """Create the hosted Checkout Session for a pending order, priced by us; returns the session dict."""
        params = {
            "mode": "payment",
            "line_items": [{
                "quantity": order.quantity,
                "price_data": {
                    "currency": order.currency,
                    "unit_amount": order.amount_minor // order.quantity,
                    "product_data": {"name": product_name},
                },
            }],
            "customer_email": order.email,
            "client_reference_id": str(order.id),
            "metadata": {"order_id": str(order.id), "event_id": str(order.event_id), "ticket_id": str(order.ticket_id)},
            # Refund events carry the intent, not the session: the order id must travel with it too.
            "payment_intent_data": {"metadata": {"order_id": str(order.id)}},
            "success_url": success_url,
            "cancel_url": cancel_url,
            "expires_at": int(expires_at),
        }
        with _translated_errors():
            session = self.client.v1.checkout.sessions.create(
                params=params, options={"idempotency_key": f"checkout-order-{order.id}"})
        return _plain(session)

    def retrieve_session(self, session_id):
        """The session as Stripe has it now, with its payment intent and latest charge expanded."""
        with _translated_errors():
            return _plain(self.client.v1.checkout.sessions.retrieve(session_id, params={"expand": SESSION_EXPAND}))

    def expire_session(self, session_id):
        """Expire an open session; a session that is no longer open is left as it is (returns None)."""
        try:
            with _translated_errors():
                return _plain(self.client.v1.checkout.sessions.expire(session_id))
        except PaymentUnavailable:
            raise
        except PaymentError as exc:
            logger.info("session %s not expired: %s", session_id, exc)
            return None

    def retrieve_payment_intent(self, payment_intent_id):
        with _translated_errors():
            return _plain(self.client.v1.payment_intents.retrieve(payment_intent_id, params={"expand": ["latest_charge"]}))

    def refund(self, *, payment_intent_id, order_id, reason):
        """Refund the whole payment; the idempotency key makes a repeated call refund once."""
        with _translated_errors():
            refund = self.client.v1.refunds.create(
                params={"payment_intent": payment_intent_id, "metadata": {"order_id": str(order_id), "reason": reason[:500]}},
                options={"idempotency_key": f"refund-order-{order_id}"})
        return _plain(refund)

    def check_credentials(self):
        """Make one cheap authenticated call; returns a description or raises PaymentError."""
        with _translated_errors():
            self.client.v1.checkout.sessions.list(params={"limit": 1})
        return "Stripe accepted the secret key"

    def parse_webhook(self, payload, sig_header):
        """Verify ``Stripe-Signature`` (default tolerance) and return the event as a dict."""
        if not self.webhook_secret:
            raise InvalidSignature("STRIPE_WEBHOOK_SECRET is not set; webhooks cannot be verified")
        try:
            event = self.client.construct_event(payload, sig_header, self.webhook_secret)
        except stripe.SignatureVerificationError as exc:
            raise InvalidSignature(str(exc)) from exc
        except (ValueError, UnicodeDecodeError, TypeError, AttributeError, RecursionError) as exc:
            raise InvalidPayload(f"not a Stripe event: {exc}") from exc
        return _checked_event(_plain_event(event))

    def parse_envelope(self, body):
        """Unwrap a cloud-provider envelope (EventBridge's ``detail``) with the library's own support."""
        return parse_envelope(body)


def parse_envelope(body):
    """Return the Stripe event inside an EventBridge envelope, or raise InvalidPayload.

    No signature exists on this path: trust comes from the queue's policy and from
    fulfilment re-reading the session from Stripe.
    """
    try:
        event = stripe.Webhook.construct_event_without_verification(body)
    except (ValueError, UnicodeDecodeError, TypeError, AttributeError, RecursionError) as exc:
        raise InvalidPayload(f"not a Stripe event envelope: {exc}") from exc
    return _checked_event(_plain_event(event))


def _checked_event(event):
    """The event, if it has what processing reads (id, type, data.object); else InvalidPayload."""
    data = event.get("data")
    if not (isinstance(event.get("id"), str) and 0 < len(event["id"]) <= 255
            and isinstance(event.get("type"), str) and 0 < len(event["type"]) <= 100
            and isinstance(data, dict) and isinstance(data.get("object"), dict)):
        raise InvalidPayload("not a Stripe event: it needs an id, a type and data.object")
    return event
