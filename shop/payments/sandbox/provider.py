"""The sandbox provider: checkouts kept in ``sandbox_checkouts``, paid by a button on our own page.

Its writes go through their own short connection (``engine.begin()``), never through the
caller's session, so a provider call can never commit or roll back the caller's work.
"""
import re
import secrets
from decimal import Decimal

from sqlalchemy import select, update

from ...extensions import db
from ...models.base import utcnow
from ...models.orders import OrderStatus
from ...urls import external_url
from .. import Checkout, InvalidPayload, InvalidSignature, PaymentNotFound, PaymentRefused, PaymentState
from .models import SandboxCheckout

REF = re.compile(r"sbx_[0-9a-f]{24}")
TABLE = SandboxCheckout.__table__

_STATUS = {"paid": OrderStatus.PAID, "expired": OrderStatus.EXPIRED, "open": None}


class SandboxProvider:
    """See ``shop.payments.PaymentProvider``; nothing here is ever charged."""

    name = "sandbox"
    handled_event_types = frozenset()
    minimum_amount = Decimal("0.50")   # as Stripe, so the sandbox refuses what production would

    def is_checkout_ref(self, value):
        return isinstance(value, str) and bool(REF.fullmatch(value))

    def start_checkout(self, spec, idempotency_key):
        existing = self._row(idempotency_key=idempotency_key)
        if existing is None:
            ref = f"sbx_{secrets.token_hex(12)}"
            with db.engine.begin() as conn:
                conn.execute(TABLE.insert().values(
                    ref=ref, order_id=spec.order_id, order_token=spec.order_token, idempotency_key=idempotency_key,
                    email=spec.email, description="\n".join(f"{line.quantity} × {line.name}" for line in spec.lines),
                    amount=spec.total, currency=spec.currency, status="open",
                    success_url=spec.success_url.replace("{CHECKOUT_REF}", ref), cancel_url=spec.cancel_url,
                    expires_at=spec.expires_at, created_at=utcnow()))
        else:
            ref = existing.ref
        return Checkout(ref=ref, url=external_url("sandbox.pay", ref=ref))

    def read_checkout(self, checkout_ref):
        row = self.checkout(checkout_ref)
        return PaymentState(
            checkout_ref=row.ref, order_id=row.order_id, order_token=row.order_token,
            status=OrderStatus.REFUNDED if row.refunded and row.refunded >= row.amount else _STATUS[row.status],
            payment_ref=row.payment_ref, amount=row.amount, currency=row.currency, refunded=row.refunded)

    def checkout(self, checkout_ref):
        """The sandbox's row for a checkout (an open one past its end reads as expired, as at Stripe)."""
        row = self._row(ref=checkout_ref) if self.is_checkout_ref(checkout_ref) else None
        if row is None:
            raise PaymentNotFound(f"the sandbox has no checkout {checkout_ref!r}")
        if row.status == "open" and row.expires_at <= utcnow():
            self._set(row.ref, "open", status="expired")
            row = self._row(ref=checkout_ref)
        return row

    def close_checkout(self, checkout_ref):
        self.checkout(checkout_ref)
        return self._set(checkout_ref, "open", status="expired")

    def pay(self, checkout_ref):
        """What the provider does when the buyer pays: an open checkout becomes paid. Else PaymentRefused."""
        row = self.checkout(checkout_ref)
        if not self._set(row.ref, "open", status="paid", payment_ref=f"sbxpay_{secrets.token_hex(12)}"):
            raise PaymentRefused(f"This checkout is {self.checkout(checkout_ref).status} and can no longer be paid.")

    def order_id_for_payment(self, payment_ref):
        row = self._row(payment_ref=payment_ref)
        if row is None:
            raise PaymentNotFound(f"the sandbox has no payment {payment_ref!r}")
        return row.order_id

    def refund(self, *, payment_ref, order_id, amount, reason, idempotency_key):
        row = self._row(payment_ref=payment_ref)
        if row is None:
            raise PaymentNotFound(f"the sandbox has no payment {payment_ref!r}")
        left = row.amount - row.refunded
        amount = left if amount is None else Decimal(amount)
        if left <= 0 or not 0 < amount <= left:
            raise PaymentRefused("This payment has no such amount left to refund.")
        with db.engine.begin() as conn:
            conn.execute(update(TABLE).where(TABLE.c.ref == row.ref).values(refunded=TABLE.c.refunded + amount))

    def check_credentials(self):
        return "sandbox payments: nothing is charged"

    def parse_webhook(self, body, headers):
        raise InvalidSignature("the sandbox accepts no webhooks: set STRIPE_SECRET_KEY and STRIPE_WEBHOOK_SECRET")

    def parse_envelope(self, body):
        raise InvalidPayload("the sandbox receives no events from a queue")

    def _row(self, **where):
        column, value = next(iter(where.items()))
        with db.engine.connect() as conn:
            return conn.execute(select(TABLE).where(TABLE.c[column] == value)).first()

    def _set(self, ref, from_status, **values):
        """A conditional UPDATE from ``from_status``; True when it applied (so two tabs cannot both pay)."""
        with db.engine.begin() as conn:
            return conn.execute(update(TABLE).where(TABLE.c.ref == ref, TABLE.c.status == from_status)
                                .values(**values)).rowcount == 1
