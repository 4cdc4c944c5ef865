"""The shop's emails: what each change of an order, and each request of a buyer, sends.

Every function adds a message to the outbox in the caller's transaction (``services/outbox.py``
sends it later); none commits, none talks to a mail server. Messages caused by a payment go
through ``outbox.queue_safely``, so a message that cannot be built never undoes the payment.
"""
import hashlib
import logging
from datetime import timedelta

from flask import current_app
from sqlalchemy import select
from sqlalchemy.orm import joinedload, selectinload

from ..extensions import db
from ..models import Admission, MessageKind, OrderStatus, TicketOrder, User
from ..urls import external_url
from . import links
from .audit import record
from .outbox import Attachment, queue_message, queue_safely
from .tickets import calendar_file, has_orders, lookup_link, ticket_url
from .transactions import transaction

logger = logging.getLogger(__name__)

VERIFY = "verify-email"
RESET = "password-reset"


class TicketsNotSendable(Exception):
    """The order has no valid tickets to send (unknown, not paid, or refunded); the message says which."""


def notify_status_change(order, old, new):
    """Queue what the buyer must hear about ``order`` having moved from ``old`` to ``new`` (in the same transaction).

    Paid: the confirmation with the tickets. Refunded: the refund notice. A delayed payment
    that failed: its notice. Each at most once per order (the outbox's unique key).
    """
    if new is OrderStatus.PAID:
        queue_safely(lambda: queue_order_confirmation(order), MessageKind.ORDER_CONFIRMATION.value)
    elif new is OrderStatus.REFUNDED:
        queue_safely(lambda: _queue_about_order(order, MessageKind.REFUND_NOTICE, "refund_notice",
                                                f"Refunded: {order.event.title}", had_tickets=old is OrderStatus.PAID),
                     MessageKind.REFUND_NOTICE.value)
    elif new is OrderStatus.FAILED and old is OrderStatus.PROCESSING:
        queue_safely(lambda: _queue_about_order(order, MessageKind.PAYMENT_FAILED, "payment_failed",
                                                f"Payment failed: {order.event.title}"),
                     MessageKind.PAYMENT_FAILED.value)


def queue_order_confirmation(order, resend=False):
    """The tickets: a link to each ticket's page, the look-up link, and the ``.ics`` attached."""
    admissions = db.session.execute(select(Admission).where(Admission.order_id == order.id)
                                    .order_by(Admission.id)).scalars().all()
    tickets = [(a, ticket_url(a.code)) for a in admissions if not a.void]
    kind = MessageKind.TICKETS_RESENT if resend else MessageKind.ORDER_CONFIRMATION
    subject = f"{'Your tickets again' if resend else 'Your tickets'}: {order.event.title}"
    calendar = Attachment(f"order-{order.id}.ics", "text/calendar; method=PUBLISH",
                          calendar_file(order, admissions).decode())
    return queue_message(kind, order.email, subject, "order_confirmation", order_id=order.id,
                         dedupe_key=None if resend else f"{kind.value}:{order.id}", attachments=(calendar,),
                         order=order, event=order.event, tickets=tickets, lookup_url=lookup_link(order.email),
                         resend=resend)


def _queue_about_order(order, kind, template, subject, **context):
    return queue_message(kind, order.email, subject, template, order_id=order.id,
                         dedupe_key=f"{kind.value}:{order.id}", order=order, event=order.event,
                         event_url=external_url("catalog.event", event_id=order.event_id),
                         lookup_url=lookup_link(order.email), **context)


def resend_tickets(order_id, actor=None):
    """Queue the order's tickets email again (the back office, the order page and ``flask shop resend`` call this).

    Returns the outbox message's id. Raises :class:`TicketsNotSendable` for an unknown order
    or one without valid tickets. Staff (``actor``, an :class:`~shop.services.audit.Actor`) are
    written to the audit log in the same transaction. Commits.
    """
    with transaction():
        order = db.session.execute(
            select(TicketOrder).where(TicketOrder.id == order_id)
            .options(joinedload(TicketOrder.event), joinedload(TicketOrder.ticket),
                     selectinload(TicketOrder.admissions))).unique().scalar_one_or_none()
        if order is None:
            raise TicketsNotSendable(f"order {order_id} does not exist")
        if order.state is not OrderStatus.PAID or not any(not a.void for a in order.admissions):
            raise TicketsNotSendable(f"order {order_id} is {order.status}: it has no valid tickets to send")
        message = queue_order_confirmation(order, resend=True)
        message_id = message.id
        if actor is not None:
            record(actor, "order.resend", "order", order_id, note=f"outbox message {message_id}")
    logger.info("order %s: tickets queued again (outbox %s)", order_id, message_id)
    return message_id


def send_order_lookup(email):
    """Mail ``email`` a signed link to its orders, if it has any; returns whether a message was queued.

    The caller answers the same either way, so the form does not tell who bought here. Commits.
    """
    email = email.strip().lower()
    with transaction():
        if not has_orders(email):
            logger.info("order look-up for an address without orders: nothing sent")
            return False
        queue_message(MessageKind.ORDER_LOOKUP, email, "Your orders at the Ticket Shop", "order_lookup",
                      lookup_url=lookup_link(email), hours=current_app.config["SHOP_LOOKUP_LINK_HOURS"])
    return True


def queue_verification(user):
    """Queue a link that confirms the account's address (``/account/verify/<token>``) in the caller's transaction."""
    token = links.sign(VERIFY, [user.id, user.email])
    return queue_message(MessageKind.VERIFY_EMAIL, user.email, "Confirm your email address", "verify_email",
                         verify_url=external_url("account.verify", token=token),
                         hours=current_app.config["SHOP_VERIFY_LINK_HOURS"])


def send_verification(user):
    """Mail the verification link again (the profile's "send it again"). Commits."""
    with transaction():
        queue_verification(user)


def user_from_verification(token):
    """The user a verification link was made for, if the address is still theirs; raises links.LinkExpired or
    links.LinkInvalid."""
    hours = current_app.config["SHOP_VERIFY_LINK_HOURS"]
    value = links.unsign(VERIFY, token, int(timedelta(hours=hours).total_seconds()))
    user = _user_of(value)
    if user is None or user.email != value[1]:
        raise links.LinkInvalid(VERIFY)
    return user


def password_fingerprint(user):
    """Changes with the password, so a reset link works once: after the reset it no longer matches."""
    return hashlib.sha256(user.password_hash.encode()).hexdigest()[:16]


def send_password_reset(email):
    """Mail a password-reset link if an account has ``email``; returns whether one was queued. Commits.

    The caller answers the same either way.
    """
    email = email.strip().lower()
    with transaction():
        user = db.session.execute(select(User).where(User.email == email)).scalar_one_or_none()
        if user is None:
            logger.info("password reset for an address without an account: nothing sent")
            return False
        token = links.sign(RESET, [user.id, password_fingerprint(user)])
        queue_message(MessageKind.PASSWORD_RESET, user.email, "Reset your password", "password_reset",
                      reset_url=external_url("account.reset_password", token=token),
                      minutes=current_app.config["SHOP_RESET_LINK_MINUTES"])
    return True


def user_from_reset(token):
    """The user a reset link was made for, while it is unused and fresh; raises links.LinkInvalid / LinkExpired."""
    minutes = current_app.config["SHOP_RESET_LINK_MINUTES"]
    value = links.unsign(RESET, token, minutes * 60)
    user = _user_of(value)
    if user is None or password_fingerprint(user) != value[1]:
        raise links.LinkInvalid(RESET)
    return user


def _user_of(value):
    if not (isinstance(value, list) and len(value) == 2 and isinstance(value[0], int)):
        return None
    return db.session.get(User, value[0])
