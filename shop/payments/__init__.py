"""The payment provider boundary: the only package that knows about Stripe.

``gateway()`` returns the provider the app was started with: :class:`StripeGateway` when
``STRIPE_SECRET_KEY`` is set, otherwise :class:`SandboxGateway`. Both speak in plain dicts
shaped like Stripe's objects, so the services above never see a library type.
"""
from flask import current_app


class PaymentError(Exception):
    """The provider refused a request (bad parameters, unknown object). Retrying will not help."""


class PaymentUnavailable(PaymentError):
    """The provider could not be reached or answered 5xx / rate-limited. Retrying later can help."""


class InvalidSignature(Exception):
    """A webhook body whose Stripe-Signature is missing, wrong or too old."""


class InvalidPayload(Exception):
    """A body that is not a Stripe event (or an EventBridge envelope around one)."""


def init_app(app):
    """Pick the provider once, at start-up: real Stripe whenever a key is set, never the sandbox then."""
    settings = app.config["STRIPE"]
    if settings.sandbox:
        from .sandbox import SandboxGateway
        app.extensions["shop.payments"] = SandboxGateway()
    else:
        from .stripe_gateway import StripeGateway
        app.extensions["shop.payments"] = StripeGateway(settings)


def gateway():
    """The current app's payment provider."""
    return current_app.extensions["shop.payments"]
