"""Test factories: rows with sensible defaults, overridable by keyword (CTFd's gen_* habit)."""
import itertools
from datetime import timedelta
from decimal import Decimal

from shop.extensions import db
from shop.models import DiscountCode, Event, TicketOrder, TicketType, User
from shop.models.base import utcnow
from shop.services.checkout import CheckoutRequest, start_checkout

_seq = itertools.count(1)


def make_event(**kw):
    event = Event(title=kw.pop("title", f"Event {next(_seq)}"), venue=kw.pop("venue", "Hall"),
                  starts_at=kw.pop("starts_at", utcnow() + timedelta(days=30)), **kw)
    db.session.add(event)
    db.session.commit()
    return event


def make_ticket(event=None, **kw):
    event = event or make_event()
    ticket = TicketType(event_id=event.id, name=kw.pop("name", "General"), price=Decimal(kw.pop("price", "20.00")),
                        capacity=kw.pop("capacity", 100), **kw)
    db.session.add(ticket)
    db.session.commit()
    return ticket


def make_discount(code="SAVE10", **kw):
    if "percent_off" not in kw and "amount_off" not in kw:
        kw["percent_off"] = 10
    discount = DiscountCode(code=DiscountCode.normalize(code), **kw)
    db.session.add(discount)
    db.session.commit()
    return discount


def make_user(email=None, password="correct horse battery"):
    user = User(email=email or f"buyer{next(_seq)}@example.com")
    user.set_password(password)
    db.session.add(user)
    db.session.commit()
    return user


def checkout(ticket, quantity=1, email="buyer@example.com", discount_code="", user=None):
    """Place an order through the real checkout service (needs a request context for URLs)."""
    order, url = start_checkout(
        CheckoutRequest(event_id=ticket.event_id, ticket_id=ticket.id, quantity=quantity, email=email,
                        discount_code=discount_code, user_id=user.id if user else None),
        success_url="http://shop.test/checkout/success?session_id={CHECKOUT_SESSION_ID}",
        cancel_url_for=lambda o: f"http://shop.test/checkout/cancel?order={o.id}")
    return db.session.get(TicketOrder, order.id), url


def reload(obj):
    """The row as the database has it now (ending the test's transaction, so its snapshot is fresh)."""
    db.session.rollback()
    return db.session.get(type(obj), obj.id, populate_existing=True)
