"""Test factories: rows with sensible defaults, overridable by keyword (CTFd's gen_* habit), and orders
placed through the real checkout service. Tests reach them through the ``make``, ``place_order``, ``holds``
and ``reload`` fixtures; they write with the ``db.session`` of the app context in force.
"""
import itertools
from datetime import timedelta
from decimal import Decimal

from sqlalchemy import update

from shop.extensions import db
from shop.models import DiscountCode, Event, EventStatus, TicketOrder, TicketType, User
from shop.models.base import utcnow
from shop.models.orders import OrderStatus
from shop.services.checkout import CheckoutRequest, ReturnUrls, start_checkout
from shop.services.orders import change_status, lock_order
from shop.services.transactions import transaction

PASSWORD = "correct horse battery"


class Factories:
    """``make.event()``, ``make.ticket()``, ``make.discount()``, ``make.user()``: one committed row each."""

    def __init__(self):
        self._seq = itertools.count(1)

    def event(self, **kw):
        """A published event (on sale) unless ``status="draft"``."""
        event = Event(title=kw.pop("title", f"Event {next(self._seq)}"), venue=kw.pop("venue", "Hall"),
                      starts_at=kw.pop("starts_at", utcnow() + timedelta(days=30)),
                      status=kw.pop("status", EventStatus.PUBLISHED.value), **kw)
        db.session.add(event)
        db.session.commit()
        return event

    def ticket(self, event=None, **kw):
        event = event or self.event()
        ticket = TicketType(event_id=event.id, name=kw.pop("name", "General"),
                            price=Decimal(kw.pop("price", "20.00")), capacity=kw.pop("capacity", 100), **kw)
        db.session.add(ticket)
        db.session.commit()
        return ticket

    def discount(self, code="SAVE10", **kw):
        if "percent_off" not in kw and "amount_off" not in kw:
            kw["percent_off"] = 10
        discount = DiscountCode(code=DiscountCode.normalize(code), **kw)
        db.session.add(discount)
        db.session.commit()
        return discount

    def user(self, email=None, password=PASSWORD, role=None):
        """A buyer, or staff with ``role="admin"`` or ``"door"``."""
        user = User(email=email or f"buyer{next(self._seq)}@example.com", role=role)
        user.set_password(password)
        db.session.add(user)
        db.session.commit()
        return user


class OrderPlacer:
    """``place_order(ticket, quantity=…)``: a pending order placed through the real checkout service.

    The service builds the order's URLs, so the call runs in a request context of ``app``; one is
    pushed here (on top of the app context in force, or of its own in a thread that has none).
    Refusals (``SoldOut``, ``CheckoutRefused``…) propagate as the service raises them.
    """

    def __init__(self, app):
        self.app = app

    def __call__(self, ticket, quantity=1, email="buyer@example.com", discount_code="", user=None):
        request = CheckoutRequest(event_id=ticket.event_id, ticket_id=ticket.id, quantity=quantity, email=email,
                                  discount_code=discount_code, user_id=user.id if user else None)
        with self.app.test_request_context():
            order, _ = start_checkout(
                request, ReturnUrls(success="http://shop.test/checkout/success?session_id={CHECKOUT_REF}",
                                    cancel_for=lambda o: f"http://shop.test/checkout/cancel?order={o.id}"))
            return db.session.get(TicketOrder, order.id)


def reload(obj):
    """The row as the database has it now (ending the test's transaction, so its snapshot is fresh)."""
    db.session.rollback()
    return db.session.get(type(obj), obj.id, populate_existing=True)


class HoldActions:
    """What time and an operator do to holds: ``holds.end(order)``, ``holds.release_unconfirmed(order)``."""

    @staticmethod
    def end(order):
        """Make the order's hold end now, as if its 30 minutes had passed."""
        db.session.execute(update(TicketOrder).where(TicketOrder.id == order.id)
                           .values(hold_expires_at=utcnow() - timedelta(minutes=10)))
        db.session.commit()

    @classmethod
    def release_unconfirmed(cls, order):
        """End the hold and release its seats on the database's word alone, its checkout still open at Stripe.

        The shop no longer does this (the sweeper releases only once Stripe confirms the checkout
        is closed), but older code did, and an operator may: a payment can then still arrive late.
        """
        cls.end(order)
        with transaction():
            change_status(lock_order(order.id), OrderStatus.EXPIRED, "released without Stripe's word")
