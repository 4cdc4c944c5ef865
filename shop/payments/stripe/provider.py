"""Stripe Checkout through the official library's ``StripeClient``.

Everything Stripe-shaped stays here: object and field names, status strings, event types,
id shapes and minor units. What leaves is the neutral vocabulary of ``shop.payments``.
"""
import contextlib
import json
import logging
import re
import urllib.request
from datetime import timezone
from decimal import Decimal
from urllib.parse import quote

import requests
import stripe

from ...models.orders import OrderStatus
from .. import (
    Checkout,
    InvalidPayload,
    InvalidSignature,
    PaymentNotFound,
    PaymentRefused,
    PaymentState,
    PaymentUnavailable,
    ProviderEvent,
)

logger = logging.getLogger(__name__)

# Expanding the intent and its charge lets one retrieve answer every question fulfilment
# asks: paid? processing? failed? refunded, and how much?
SESSION_EXPAND = ["payment_intent", "payment_intent.latest_charge"]
# Stripe's ids: a prefix, an underscore, then letters, digits and underscores. Checked before
# anything reaches the database, so an odd id (a lone surrogate, 10 kB long) is a 400.
EVENT_ID = re.compile(r"evt_[A-Za-z0-9_]{1,250}")
SESSION_ID = re.compile(r"cs_[A-Za-z0-9_]{1,250}")
INTENT_ID = re.compile(r"pi_[A-Za-z0-9_]{1,250}")
# Stripe's smallest charge in USD and EUR; below it Stripe refuses the Checkout Session.
MINIMUM_AMOUNT = Decimal("0.50")
# The only currencies the shop accepts have two decimals (config refuses the others).
MINOR_UNITS_PER_MAJOR = 100
# Connections to Stripe kept open per process: one per request a gevent worker serves at once (gunicorn.conf.py's
# worker_connections), so a rush never opens and drops connections beyond the pool.
KEPT_CONNECTIONS = 1000


def to_minor(amount):
    """Decimal major units → Stripe's integer minor units (pretix's ``_decimal_to_int``)."""
    return int((Decimal(amount) * MINOR_UNITS_PER_MAJOR).to_integral_value())


def from_minor(amount):
    """Stripe's integer minor units → Decimal major units (None stays None)."""
    return None if amount is None else (Decimal(int(amount)) / MINOR_UNITS_PER_MAJOR).quantize(Decimal("0.01"))


def _redacted(key):
    """A key as Stripe's dashboard shows it: the kind, and the last four characters."""
    if not key:
        return "(unset)"
    return f"{key[:8]}…{key[-4:]}" if len(key) > 16 else f"{key[:3]}…"


@contextlib.contextmanager
def _translated_errors(key):
    """Stripe's exceptions → the boundary's. Only "no such object" means the object is not ours.

    A refused key (401), a permission error (403, e.g. a restricted ``rk_`` key), a rate
    limit and any 5xx are answers that a later attempt, or an operator, can fix: they must
    never be taken as "Stripe does not know this payment".
    """
    try:
        yield
    except stripe.InvalidRequestError as exc:
        if exc.code == "resource_missing":
            raise PaymentNotFound(f"Stripe has no such object: {exc.user_message or exc}") from exc
        raise PaymentRefused(f"Stripe refused the request: {exc.user_message or exc}") from exc
    except (stripe.AuthenticationError, stripe.PermissionError) as exc:
        raise PaymentUnavailable(f"Stripe refused our key {_redacted(key)} ({exc.http_status}): "
                                 f"{exc.user_message or exc}") from exc
    except (stripe.APIConnectionError, stripe.RateLimitError) as exc:
        raise PaymentUnavailable(f"Stripe could not be reached: {exc.user_message or exc}") from exc
    except stripe.APIError as exc:
        raise PaymentUnavailable(f"Stripe answered with an error: {exc.user_message or exc}") from exc
    except stripe.StripeError as exc:
        if exc.http_status and exc.http_status >= 500:
            raise PaymentUnavailable(f"Stripe answered with an error: {exc.user_message or exc}") from exc
        raise PaymentRefused(f"Stripe refused the request: {exc.user_message or exc}") from exc


def _plain(obj):
    """A StripeObject as plain JSON data. ``to_dict()`` leaves StripeObjects inside lists of
    lists, so a JSON round trip converts every level."""
    if obj is None:
        return None
    return json.loads(json.dumps(obj.to_dict(recursive=True, for_json=True),
                                 default=lambda o: o.to_dict(recursive=True, for_json=True)))


def _expanded(value):
    return value if isinstance(value, dict) else None


def _target_status(session, intent, charge):
    """The order status a session (with its intent and latest charge) implies; None while payable."""
    if charge and charge.get("amount") and int(charge.get("amount_refunded") or 0) >= charge["amount"]:
        return OrderStatus.REFUNDED
    if session.get("status") == "complete":
        if session.get("payment_status") in ("paid", "no_payment_required"):
            return OrderStatus.PAID
        # A delayed payment method: the intent says whether it is still on its way or failed.
        failed = intent is not None and intent.get("status") in ("requires_payment_method", "canceled")
        return OrderStatus.FAILED if failed else OrderStatus.PROCESSING
    if session.get("status") == "expired":
        return OrderStatus.EXPIRED
    return None


def payment_state(session):
    """A Checkout Session (intent and latest charge expanded) in the shop's words."""
    intent = _expanded(session.get("payment_intent"))
    charge = _expanded(intent.get("latest_charge")) if intent else None
    metadata = session.get("metadata") or {}
    raw_order_id = metadata.get("order_id")
    order_id = int(raw_order_id) if isinstance(raw_order_id, str) and raw_order_id.isdigit() else None
    return PaymentState(
        checkout_ref=session.get("id"), order_id=order_id, order_token=metadata.get("order_token"),
        status=_target_status(session, intent, charge),
        payment_ref=intent.get("id") if intent else session.get("payment_intent"),
        amount=from_minor(session.get("amount_total")), currency=(session.get("currency") or "").lower() or None,
        refunded=from_minor(charge.get("amount_refunded") or 0) if charge else Decimal("0.00"))


def _session_trigger(obj):
    session_id = obj.get("id")
    if isinstance(session_id, str) and SESSION_ID.fullmatch(session_id):
        return {"checkout_ref": session_id}
    return {"ignored": "the event's object has no checkout session id"}


def _payment_trigger(obj):
    """A charge or a refund: both name the payment intent, which leads to the order."""
    intent_id = obj.get("payment_intent")
    if isinstance(intent_id, str) and INTENT_ID.fullmatch(intent_id):
        return {"payment_ref": intent_id}
    return {"ignored": "the event's object names no payment intent"}


# dj-stripe's dispatch table: the event types fulfilment acts on, and what each asks us to re-read.
EVENT_TRIGGERS = {
    "checkout.session.completed": _session_trigger,
    "checkout.session.async_payment_succeeded": _session_trigger,
    "checkout.session.async_payment_failed": _session_trigger,
    "checkout.session.expired": _session_trigger,
    "charge.refunded": _payment_trigger,
    "charge.refund.updated": _payment_trigger,
}


def provider_event(event):
    """A verified (or envelope-unwrapped) Stripe event as a :class:`ProviderEvent`, or InvalidPayload."""
    event_id, event_type, data = event.get("id"), event.get("type"), event.get("data")
    if not (isinstance(event_id, str) and EVENT_ID.fullmatch(event_id)):
        raise InvalidPayload("not a Stripe event: its id is not an evt_ id")
    if not (isinstance(event_type, str) and 0 < len(event_type) <= 100
            and isinstance(data, dict) and isinstance(data.get("object"), dict)):
        raise InvalidPayload("not a Stripe event: it needs an id, a type and data.object")
    trigger = EVENT_TRIGGERS.get(event_type)
    found = trigger(data["object"]) if trigger else {"ignored": f"{event_type} is not an event the shop acts on"}
    return ProviderEvent(id=event_id, type=event_type, payload=event, **found)


class StripeProvider:
    """Real Stripe (or a Stripe-compatible server at ``STRIPE_API_BASE``); see ``PaymentProvider``."""

    name = "stripe"
    handled_event_types = frozenset(EVENT_TRIGGERS)
    minimum_amount = MINIMUM_AMOUNT

    def __init__(self, settings):
        base = {"api": settings.api_base} if settings.api_base else None
        # The library retries connection errors itself, re-sending the same idempotency key.
        self.client = stripe.StripeClient(settings.secret_key, base_addresses=base, max_network_retries=1,
                                          http_client=_http_client())
        self.key = settings.secret_key
        self.webhook_secret = settings.webhook_secret

    def is_checkout_ref(self, value):
        return isinstance(value, str) and bool(SESSION_ID.fullmatch(value))

    def start_checkout(self, spec, idempotency_key):
        params = {
            "mode": "payment",
            "line_items": [{
                "quantity": line.quantity,
                "price_data": {"currency": spec.currency, "unit_amount": to_minor(line.unit_amount),
                               "product_data": {"name": line.name}},
            } for line in spec.lines],
            "customer_email": spec.email,
            "client_reference_id": str(spec.order_id),
            "metadata": {"order_id": str(spec.order_id), "order_token": spec.order_token, **spec.metadata},
            # Refund events carry the intent, not the session: the order id must travel with it too.
            "payment_intent_data": {"metadata": {"order_id": str(spec.order_id)}},
            "success_url": spec.success_url.replace("{CHECKOUT_REF}", "{CHECKOUT_SESSION_ID}"),
            "cancel_url": spec.cancel_url,
            "expires_at": int(spec.expires_at.replace(tzinfo=timezone.utc).timestamp()),
        }
        with _translated_errors(self.key):
            session = self._call("post", "/v1/checkout/sessions", idempotency_key=idempotency_key, **params)
        return Checkout(ref=session["id"], url=session["url"])

    def read_checkout(self, checkout_ref):
        with _translated_errors(self.key):
            session = self._call("get", f"/v1/checkout/sessions/{quote(checkout_ref, safe='')}", expand=SESSION_EXPAND)
        return payment_state(session)

    def _call(self, method, path, **params):
        """The answer of one call as plain JSON data: the library's raw request, with its encoding, retries,
        idempotency and errors, but without typed objects, which the two calls on the money path (a rush
        makes one of each per order) would build only to be read back into dicts."""
        return self.client.raw_request(method, path, **params).data

    def close_checkout(self, checkout_ref):
        try:
            with _translated_errors(self.key):
                self.client.v1.checkout.sessions.expire(checkout_ref)
        except PaymentNotFound:
            raise
        except PaymentRefused as exc:
            # Stripe refuses to expire a session that is not open (complete or expired): nothing to close.
            logger.debug("checkout not closed, it is no longer open: %s", exc)
            return False
        return True

    def order_id_for_payment(self, payment_ref):
        with _translated_errors(self.key):
            intent = self.client.v1.payment_intents.retrieve(payment_ref)
        order_id = (_plain(intent).get("metadata") or {}).get("order_id")
        return int(order_id) if isinstance(order_id, str) and order_id.isdigit() else None

    def refund(self, *, payment_ref, order_id, amount, reason, idempotency_key):
        params = {"payment_intent": payment_ref, "metadata": {"order_id": str(order_id), "reason": reason[:500]}}
        if amount is not None:
            params["amount"] = to_minor(amount)
        with _translated_errors(self.key):
            self.client.v1.refunds.create(params=params, options={"idempotency_key": idempotency_key})

    def check_credentials(self):
        with _translated_errors(self.key):
            self.client.v1.checkout.sessions.list(params={"limit": 1})
        return f"Stripe accepted the key {_redacted(self.key)}"

    def parse_webhook(self, body, headers):
        """Verify ``Stripe-Signature`` (Stripe's default tolerance of 5 minutes) and return the event."""
        if not self.webhook_secret:
            raise InvalidSignature("STRIPE_WEBHOOK_SECRET is not set; webhooks cannot be verified")
        try:
            payload = body.decode("utf-8") if isinstance(body, bytes) else body
            # The library's own check; the event is then read as plain JSON, never built into typed objects.
            stripe.WebhookSignature.verify_header(payload, headers.get("Stripe-Signature"), self.webhook_secret,
                                                  stripe.Webhook.DEFAULT_TOLERANCE)
            event = json.loads(payload)
        except stripe.SignatureVerificationError as exc:
            raise InvalidSignature(str(exc)) from exc
        except (ValueError, TypeError, AttributeError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
            raise InvalidPayload(f"not a Stripe event: {exc}") from exc
        if not isinstance(event, dict):
            raise InvalidPayload("not a Stripe event: not a JSON object")
        return provider_event(event)

    def parse_envelope(self, body):
        """The Stripe event inside an EventBridge envelope, unwrapped by the library's own support.

        No signature exists on this path: trust comes from the queue's policy, the source
        check and fulfilment re-reading the session from Stripe. The envelope's
        ``detail-type`` must name the event's own type.
        """
        return parse_envelope(body)


def _http_client():
    """One keep-alive connection pool for every request of the process.

    Left to itself the library opens a ``requests`` session per thread, and a gevent worker runs
    each request in a new greenlet: every call would open a new TLS connection. The session also
    stops consulting the environment on every call (``trust_env``, a scan of every variable); a
    proxy set there (``HTTPS_PROXY``) is read once, here.
    """
    session = requests.Session()
    session.trust_env = False
    adapter = requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=KEPT_CONNECTIONS)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    proxies = urllib.request.getproxies()
    proxy = {scheme: proxies[scheme] for scheme in ("http", "https") if scheme in proxies}
    return stripe.RequestsClient(session=session, proxy=proxy or None)


def parse_envelope(body):
    """See :meth:`StripeProvider.parse_envelope`; needs no client (there is no signature to check)."""
    try:
        envelope = json.loads(body)
        event = stripe.Webhook.construct_event_without_verification(body)
    except (ValueError, UnicodeDecodeError, TypeError, AttributeError, RecursionError) as exc:
        raise InvalidPayload(f"not a Stripe event envelope: {exc}") from exc
    found = provider_event(_plain(event))
    if not isinstance(envelope, dict) or envelope.get("detail-type") != found.type:
        raise InvalidPayload(f"the envelope's detail-type does not match the event's type {found.type!r}")
    return found
