"""Accounts (Flask-Login): buyers, and the organizer's staff with a role; staff API tokens for scanner apps."""
import enum
import hashlib
import re

from flask_login import UserMixin
from sqlalchemy import func
from werkzeug.security import check_password_hash, generate_password_hash

from ..extensions import db, login_manager
from .base import utcnow

SESSION_ID = re.compile(r"([0-9]+):([0-9]+)", re.ASCII)


class StaffRole(str, enum.Enum):
    """What a member of the organizer's staff may do in ``/console``; buyers have no role."""
    ADMIN = "admin"   # runs everything: events, orders, refunds, exports, check-in
    DOOR = "door"     # checks tickets in at the door, nothing else


class User(UserMixin, db.Model):
    __tablename__ = "users"

    id = db.Column(db.Integer, primary_key=True)
    email = db.Column(db.String(255), nullable=False, unique=True)
    password_hash = db.Column(db.String(255), nullable=False)
    created_at = db.Column(db.DateTime, nullable=False, default=utcnow, server_default=func.current_timestamp())
    # Part of the id kept in the session cookie: raising it (logout, password change) voids every
    # cookie issued before, which a signed cookie alone cannot do.
    session_version = db.Column(db.Integer, nullable=False, default=1, server_default="1")
    # Set when the owner opened the link we mailed; only then do guest orders placed with this email join.
    email_verified_at = db.Column(db.DateTime, nullable=True)

    @property
    def email_verified(self):
        return self.email_verified_at is not None
    # NULL for buyers; a StaffRole value for the organizer's staff (``flask shop grant-staff``).
    role = db.Column(db.String(16), nullable=True)

    @property
    def staff_role(self):
        return StaffRole(self.role) if self.role else None

    @property
    def is_admin(self):
        return self.staff_role is StaffRole.ADMIN

    def may_check_in(self):
        return self.staff_role in (StaffRole.ADMIN, StaffRole.DOOR)

    def set_password(self, password):
        self.password_hash = generate_password_hash(password)

    def check_password(self, password):
        return check_password_hash(self.password_hash, password)

    def get_id(self):
        return f"{self.id}:{self.session_version}"


@login_manager.user_loader
def load_user(session_id):
    """The user of a session cookie, unless its session version is no longer the user's (logged out since)."""
    match = SESSION_ID.fullmatch(session_id or "")
    if match is None:
        return None  # a cookie from before session versions, or a malformed one: log in again
    user = db.session.get(User, int(match.group(1)))
    return user if user is not None and user.session_version == int(match.group(2)) else None


class ApiToken(db.Model):
    """A staff member's bearer token for the check-in API (``flask shop create-api-token``).

    Only a SHA-256 of the token is kept: the token itself is shown once, when it is made. A token
    is worth what its user's role is worth at the time of use, so revoking the role revokes it.
    """
    __tablename__ = "api_tokens"

    id = db.Column(db.Integer, primary_key=True)
    user_id = db.Column(db.Integer, db.ForeignKey("users.id"), nullable=False, index=True)
    token_hash = db.Column(db.String(64), nullable=False, unique=True)
    created_at = db.Column(db.DateTime, nullable=False, default=utcnow, server_default=func.current_timestamp())
    last_used_at = db.Column(db.DateTime, nullable=True)

    user = db.relationship("User")

    @staticmethod
    def digest(token):
        return hashlib.sha256(token.encode()).hexdigest()
