"""The audit log: every staff action, console or CLI, with who, what, when, and an edit's before and after.

Services call :func:`record` inside the transaction that makes the change, so an entry exists
exactly when the change committed.
"""
import json
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import select

from ..extensions import db
from ..models import AuditEntry


@dataclass(frozen=True)
class Actor:
    """Who acts: a staff member (by id and email), or the command line."""
    user_id: int | None
    label: str

    @classmethod
    def of(cls, user):
        return cls(user.id, user.email)


CLI = Actor(None, "cli")


def _plain(value):
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    return value


def snapshot(row, fields):
    """``{field: value}`` of ``row`` as JSON-able values (Decimal and datetime as text)."""
    return {name: _plain(getattr(row, name)) for name in fields}


def record(actor, action, target_type, target_id, before=None, after=None, note=""):
    """Add one entry to the session; for an edit, only the fields that changed are kept on both sides."""
    if before is not None and after is not None:
        changed = [k for k in after if before.get(k) != after.get(k)]
        before, after = {k: before.get(k) for k in changed}, {k: after[k] for k in changed}
    db.session.add(AuditEntry(
        actor_id=actor.user_id, actor_label=actor.label[:255], action=action, target_type=target_type,
        target_id=str(target_id), note=(note or "")[:500],
        before=json.dumps(before, sort_keys=True) if before is not None else None,
        after=json.dumps(after, sort_keys=True) if after is not None else None))


def entries(target_type=None, target_id=None, limit=200, before_id=None):
    """The newest entries first (for one target when given); ``before_id`` pages back."""
    query = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
    if target_type is not None:
        query = query.where(AuditEntry.target_type == target_type, AuditEntry.target_id == str(target_id))
    if before_id is not None:
        query = query.where(AuditEntry.id < before_id)
    return db.session.execute(query).scalars().all()
