"""The payment provider boundary: what the shop asks of a payment provider, and in which words.

pretix's ``BasePaymentProvider`` habit: one documented contract, one provider per
subpackage. ``payments/stripe/`` is the only place that imports ``stripe`` or knows its
objects, event types, statuses and minor units; ``payments/sandbox/`` is the embedded
default's stand-in. Everything above this package speaks the neutral types below: a
:class:`CheckoutSpec` goes in, a :class:`PaymentState` (amounts as ``Decimal``) comes back,
and fulfilment applies that state without ever reading a provider's field names.

Errors are siblings, so a caller handles each on its own (never ``except X: raise``):

* :class:`PaymentUnavailable`: the provider could not answer now (network, 5xx, rate
  limit, or our key refused with 401/403). Retrying later can help; nothing is concluded.
* :class:`PaymentRefused`: the provider answered no (bad parameters, a refund it won't
  make). Retrying the same request will not help.
* :class:`PaymentNotFound` (a kind of refusal): the provider has no such object. Only this
  answer means "not ours"; an event about it is acknowledged and dropped.
"""
from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Protocol

from flask import current_app

from ..models.orders import OrderStatus


class PaymentUnavailable(Exception):
    """The provider could not be asked, or could not answer now. A later attempt can succeed."""


class PaymentRefused(Exception):
    """The provider refused the request. Repeating it unchanged will not help."""


class PaymentNotFound(PaymentRefused):
    """The provider has no object with that reference (Stripe's ``resource_missing``)."""


class InvalidSignature(Exception):
    """A webhook body whose signature is missing, wrong or too old."""


class InvalidPayload(Exception):
    """A body that is not one of the provider's events (or an envelope around one)."""


@dataclass(frozen=True)
class CheckoutLine:
    """One line the buyer sees on the provider's payment page."""
    name: str
    quantity: int
    unit_amount: Decimal


@dataclass(frozen=True)
class CheckoutSpec:
    """Everything a provider needs to open a payment page for a pending order, priced by us."""
    order_id: int
    order_token: str            # :func:`order_token` of the order id; travels with the payment
    email: str
    currency: str
    lines: tuple[CheckoutLine, ...]
    success_url: str            # may contain ``{CHECKOUT_REF}``, replaced by the checkout's reference
    cancel_url: str
    expires_at: datetime        # naive UTC: the end of the order's hold
    metadata: dict = field(default_factory=dict)   # more of our ids to keep with the payment (strings)

    @property
    def total(self) -> Decimal:
        return sum((line.unit_amount * line.quantity for line in self.lines), Decimal("0.00"))


@dataclass(frozen=True)
class Checkout:
    """A payment page opened for an order: its reference at the provider and where to send the buyer."""
    ref: str
    url: str


@dataclass(frozen=True)
class PaymentState:
    """What the provider says about one checkout, in the shop's words.

    ``status`` is the order status the provider's objects imply, or None while the buyer
    can still pay. Amounts are in the currency's major unit.
    """
    checkout_ref: str
    order_id: int | None
    order_token: str | None
    status: OrderStatus | None
    payment_ref: str | None = None
    amount: Decimal | None = None
    currency: str | None = None
    refunded: Decimal = Decimal("0.00")


@dataclass(frozen=True)
class ProviderEvent:
    """An event a provider delivered, reduced to what fulfilment acts on.

    An event is only a trigger to re-read: ``checkout_ref`` (or ``payment_ref`` when the
    event is about a payment, e.g. a refund) names what to look up. ``ignored`` gives the
    reason when the event asks for nothing. ``payload`` is the raw event, stored as received.
    """
    id: str
    type: str
    payload: dict = field(repr=False)
    checkout_ref: str | None = None
    payment_ref: str | None = None
    ignored: str | None = None


class PaymentProvider(Protocol):
    """The contract every provider fulfils. Methods run outside any database transaction.

    ``name``
        Short name for logs, ``/healthz`` and ``doctor`` ("stripe", "sandbox").
    ``handled_event_types``
        The event types :meth:`parse_webhook` turns into triggers (the EventBridge rule's filter).
    """
    name: str
    handled_event_types: frozenset[str]

    def is_checkout_ref(self, value: str) -> bool:
        """Whether ``value`` has the shape of this provider's checkout reference (no lookup).

        Called on untrusted input (the success page's query string) before any database read.
        """

    def start_checkout(self, spec: CheckoutSpec, idempotency_key: str) -> Checkout:
        """Open the payment page for a pending order, after its seats are held and committed.

        Repeating the call with the same key returns the same checkout. Raises
        PaymentUnavailable or PaymentRefused; the caller then releases the hold.
        """

    def read_checkout(self, checkout_ref: str) -> PaymentState:
        """The checkout's state as the provider has it now: the truth fulfilment applies.

        Called for every event, by the success and cancel pages, the sweeper and after a
        refund. Raises PaymentNotFound for an unknown reference, PaymentUnavailable when
        it cannot answer now.
        """

    def close_checkout(self, checkout_ref: str) -> bool:
        """Make the checkout unpayable (buyer cancelled, hold ended); True if it was open.

        A checkout that was already closed (paid, expired) is left as it is. Raises
        PaymentUnavailable; the caller then keeps the seats held and tries again later.
        """

    def order_id_for_payment(self, payment_ref: str) -> int | None:
        """The order id a payment carries (for an event about a payment we have no order for).

        Raises PaymentNotFound or PaymentUnavailable.
        """

    def refund(self, *, payment_ref: str, order_id: int, amount: Decimal | None, reason: str,
               idempotency_key: str) -> None:
        """Refund ``amount`` (all of it when None) of a payment; the key makes a repeat refund once.

        The refund is recorded only when a later :meth:`read_checkout` shows it. Raises
        PaymentRefused (nothing left to refund, say) or PaymentUnavailable.
        """

    def parse_webhook(self, body: bytes, headers) -> ProviderEvent:
        """Verify a webhook's signature and return its event. Raises InvalidSignature or InvalidPayload."""

    def parse_envelope(self, body: str) -> ProviderEvent:
        """The event inside a cloud envelope (EventBridge's ``detail``). Raises InvalidPayload."""

    def check_credentials(self) -> str:
        """One cheap authenticated call for ``doctor``; returns what was found or raises a payment error."""


def init_app(app):
    """Pick the provider once, at start-up; configuration has decided whether that is the sandbox."""
    if app.config["STRIPE"].sandbox:
        from .sandbox import SandboxProvider
        app.extensions["shop.payments"] = SandboxProvider()
    else:
        from .stripe import StripeProvider
        app.extensions["shop.payments"] = StripeProvider(app.config["STRIPE"])


def gateway() -> PaymentProvider:
    """The current app's payment provider."""
    return current_app.extensions["shop.payments"]


def order_token(order_id: int, secret: str | None = None) -> str:
    """An HMAC of the order id that travels in the checkout's metadata.

    An order that has no checkout reference yet (the process died between the hold and
    the provider's answer) adopts a checkout only if it carries this token, so a checkout
    made elsewhere with a copied order id cannot pay it.
    """
    key = (secret or current_app.config["SECRET_KEY"]).encode()
    return hmac.new(key, f"order:{order_id}".encode(), hashlib.sha256).hexdigest()[:32]
