"""The organizer's staff: roles on accounts, and API tokens for scanner apps."""
import logging
import secrets

from sqlalchemy import delete, select, update

from ..extensions import db
from ..models import ApiToken, StaffRole, User
from ..models.base import utcnow
from .audit import CLI, record
from .transactions import transaction

logger = logging.getLogger(__name__)

TOKEN_PREFIX = "shop_"


class StaffError(Exception):
    """The staff change cannot be made; the message says why."""


def _user_by_email(email):
    return db.session.execute(select(User).where(User.email == email.strip().lower())).scalar_one_or_none()


def grant_staff(email, role, actor=CLI):
    """Give the account ``email`` a staff role; returns ``(user, password)``.

    Without an account yet, one is created with a random password, returned once so it can be
    handed over (``password`` is None for an existing account).
    """
    role = StaffRole(role)
    password = None
    with transaction():
        user = _user_by_email(email)
        if user is None:
            password = secrets.token_urlsafe(12)
            user = User(email=email.strip().lower())
            user.set_password(password)
            db.session.add(user)
            db.session.flush()
        before = user.role
        user.role = role.value
        record(actor, "staff.grant", "user", user.id, before={"role": before}, after={"role": role.value},
               note=user.email)
    logger.info("user %s is now %s staff (by %s)", user.id, role.value, actor.label)
    return user, password


def revoke_staff(email, actor=CLI):
    """Take the staff role from ``email``: their console sessions and API tokens stop working at once."""
    with transaction():
        user = _user_by_email(email)
        if user is None or user.role is None:
            raise StaffError(f"{email} is not staff.")
        before = user.role
        user.role = None
        # A copy of their session cookie must not keep a console tab open.
        user.session_version = User.session_version + 1
        db.session.execute(delete(ApiToken).where(ApiToken.user_id == user.id))
        record(actor, "staff.revoke", "user", user.id, before={"role": before}, after={"role": None}, note=user.email)
    logger.info("user %s is no longer staff (by %s)", user.id, actor.label)
    return user


def create_api_token(email, actor=CLI):
    """A new bearer token for staff member ``email``; returns the token, which is never stored or shown again."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with transaction():
        user = _user_by_email(email)
        if user is None or user.role is None:
            raise StaffError(f"{email} is not staff: grant a role first (flask --app wsgi shop grant-staff).")
        api_token = ApiToken(user_id=user.id, token_hash=ApiToken.digest(token))
        db.session.add(api_token)
        db.session.flush()
        record(actor, "api_token.create", "user", user.id, after={"token_id": api_token.id}, note=user.email)
    return token


def user_for_token(token):
    """The staff member a bearer token belongs to, or None (unknown token, or no role any more)."""
    if not token or not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    digest = ApiToken.digest(token)
    with transaction():
        user = db.session.execute(select(User).join(ApiToken, ApiToken.user_id == User.id)
                                  .where(ApiToken.token_hash == digest)).scalar_one_or_none()
        if user is None or user.role is None:
            return None
        db.session.execute(update(ApiToken).where(ApiToken.token_hash == digest).values(last_used_at=utcnow()))
    return user
