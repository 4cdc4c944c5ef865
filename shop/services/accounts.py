"""Buyer accounts and what a buyer may see of their orders."""
import logging
import secrets
import threading
from contextlib import contextmanager
from functools import cache

from flask import current_app
from sqlalchemy import and_, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import joinedload, selectinload
from werkzeug.security import check_password_hash, generate_password_hash

from ..extensions import db
from ..models import TicketOrder, User
from ..models.base import utcnow
from .mail import queue_verification
from .transactions import transaction

logger = logging.getLogger(__name__)


class EmailTaken(Exception):
    """An account with that email exists already."""


class HashingBusy(Exception):
    """Every password-hashing slot of this process stayed taken for SHOP_HASH_WAIT_SECONDS; answer 503."""


def init_app(app):
    """Give the app its password-hashing slots (SHOP_HASH_CONCURRENCY per process)."""
    app.extensions["shop.password_hashing"] = threading.BoundedSemaphore(app.config["SHOP_HASH_CONCURRENCY"])


@contextmanager
def password_hashing_slot():
    """Hold one of the process's few hashing slots, or raise HashingBusy.

    A password hash costs tens of milliseconds of CPU on purpose, holding the GIL; a flood of logins
    hashing on every request thread would starve the page views of the same worker. Two at a time
    keep the pages answering while logins queue (and past the wait, are told to come back).
    """
    slots = current_app.extensions["shop.password_hashing"]
    if not slots.acquire(timeout=current_app.config["SHOP_HASH_WAIT_SECONDS"]):
        raise HashingBusy()
    try:
        yield
    finally:
        slots.release()


@cache
def _unknown_user_hash():
    """A hash made like every user's, checked when no account has the email, so both cost the same time."""
    return generate_password_hash(secrets.token_urlsafe(16))


def register_user(email, password):
    """Create an account and queue the mail that verifies its address (one transaction).

    The unique email column, not a look-up, decides whether it is taken. A taken email costs
    the same hash as a new one, so the time taken tells nothing either.
    """
    user = User(email=email.strip().lower())
    with password_hashing_slot():
        user.set_password(password)
    try:
        with transaction():
            db.session.add(user)
            db.session.flush()
            queue_verification(user)
    except IntegrityError:
        raise EmailTaken(email) from None
    logger.info("user %s registered", user.id)
    return user


def verify_email(user):
    """Mark ``user``'s address verified and let the guest orders placed with it join the account; returns how many.

    Only the owner of the address can open the link that leads here, so only then are orders
    bought without logging in (by whoever typed this address) shown on the account.
    """
    with transaction():
        db.session.execute(update(User).where(User.id == user.id, User.email_verified_at.is_(None))
                           .values(email_verified_at=utcnow()))
        joined = db.session.execute(
            update(TicketOrder).where(TicketOrder.user_id.is_(None), TicketOrder.email == user.email)
            .values(user_id=user.id).execution_options(synchronize_session=False)).rowcount
    db.session.refresh(user)
    logger.info("user %s: email verified, %s guest order(s) joined the account", user.id, joined)
    return joined


def owned_by(user):
    """SQL condition: the orders ``user`` may see. Those placed while logged in, and once the address is
    verified, guest orders placed with it (later ones included); never before."""
    if user.email_verified:
        return or_(TicketOrder.user_id == user.id,
                   and_(TicketOrder.user_id.is_(None), TicketOrder.email == user.email))
    return TicketOrder.user_id == user.id


def authenticate(email, password):
    """The user with that email and password, or None; an unknown email takes as long as a wrong password."""
    user = db.session.execute(select(User).where(User.email == email.strip().lower())).scalar_one_or_none()
    with password_hashing_slot():
        if user is None:
            check_password_hash(_unknown_user_hash(), password)
            return None
        return user if user.check_password(password) else None


def end_sessions(user):
    """Void every session cookie of ``user`` (all devices): the session version in them no longer matches."""
    with transaction():
        db.session.execute(update(User).where(User.id == user.id).values(session_version=User.session_version + 1))
    logger.info("user %s: sessions ended", user.id)


def change_password(user, new_password):
    """Set a new password and end every session made with the old one (the caller logs the user in again)."""
    with password_hashing_slot():
        password_hash = generate_password_hash(new_password)
    with transaction():
        db.session.execute(update(User).where(User.id == user.id)
                           .values(password_hash=password_hash, session_version=User.session_version + 1))
    db.session.refresh(user)
    logger.info("user %s: password changed, older sessions ended", user.id)


ORDERS_PER_PAGE = 50


def orders_of(user, page=1, per_page=ORDERS_PER_PAGE):
    """``(orders, has_next)``: one page of a buyer's orders (:func:`owned_by`), newest first, with event, ticket
    type and admissions (two indexed queries: the buyer's rows by user and by email, never the whole table)."""
    orders = db.session.execute(
        select(TicketOrder).where(owned_by(user))
        .options(joinedload(TicketOrder.event), joinedload(TicketOrder.ticket), selectinload(TicketOrder.admissions))
        .order_by(TicketOrder.created_at.desc(), TicketOrder.id.desc())
        .limit(per_page + 1).offset((page - 1) * per_page)).unique().scalars().all()
    return orders[:per_page], len(orders) > per_page


def order_of(user, order_id):
    """One order if ``user`` may see it (:func:`owned_by`), else None (so others get a 404, not a 403)."""
    return db.session.execute(
        select(TicketOrder).where(TicketOrder.id == order_id, owned_by(user))
        .options(joinedload(TicketOrder.event), joinedload(TicketOrder.ticket), joinedload(TicketOrder.discount_code),
                 selectinload(TicketOrder.admissions))).unique().scalar_one_or_none()
