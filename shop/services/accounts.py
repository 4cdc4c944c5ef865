"""Buyer accounts and what a buyer may see of their orders."""
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import joinedload, selectinload

from ..extensions import db
from ..models import TicketOrder, User


class EmailTaken(Exception):
    """An account with that email exists already."""


def register_user(email, password):
    """Create an account; the unique email column, not a look-up, decides whether it is taken."""
    user = User(email=email.strip().lower())
    user.set_password(password)
    db.session.add(user)
    try:
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        raise EmailTaken(email) from None
    return user


def authenticate(email, password):
    """The user with that email and password, or None."""
    user = db.session.execute(select(User).where(User.email == email.strip().lower())).scalar_one_or_none()
    return user if user is not None and user.check_password(password) else None


def orders_of(user_id):
    """A buyer's orders, newest first, with event, ticket type and admissions (two indexed queries)."""
    return db.session.execute(
        select(TicketOrder).where(TicketOrder.user_id == user_id)
        .options(joinedload(TicketOrder.event), joinedload(TicketOrder.ticket), selectinload(TicketOrder.admissions))
        .order_by(TicketOrder.created_at.desc(), TicketOrder.id.desc())).unique().scalars().all()


def order_of(user_id, order_id):
    """One order if it belongs to ``user_id``, else None (so others get a 404, not a 403)."""
    return db.session.execute(
        select(TicketOrder).where(TicketOrder.id == order_id, TicketOrder.user_id == user_id)
        .options(joinedload(TicketOrder.event), joinedload(TicketOrder.ticket), joinedload(TicketOrder.discount_code),
                 selectinload(TicketOrder.admissions))).unique().scalar_one_or_none()
