"""The audit log: who did what to which row, and when, with the fields before and after an edit."""
from sqlalchemy import Index, func

from ..extensions import db
from .base import utcnow


class AuditEntry(db.Model):
    """One staff action (console or CLI). Written in the same transaction as the change it records,
    so the log never claims a change that was rolled back, nor misses one that committed."""
    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_target", "target_type", "target_id", "created_at"),)

    id = db.Column(db.Integer, primary_key=True)
    created_at = db.Column(db.DateTime, nullable=False, default=utcnow, server_default=func.current_timestamp(),
                           index=True)
    actor_id = db.Column(db.Integer, db.ForeignKey("users.id"), nullable=True)
    actor_label = db.Column(db.String(255), nullable=False)    # the staff member's email, or "cli"
    action = db.Column(db.String(64), nullable=False)           # e.g. event.publish, order.refund, checkin.undo
    target_type = db.Column(db.String(32), nullable=False)      # event, ticket_type, discount, order, user
    target_id = db.Column(db.String(64), nullable=False)
    before = db.Column(db.Text, nullable=True)                   # JSON of the fields an edit changed
    after = db.Column(db.Text, nullable=True)
    note = db.Column(db.String(500), nullable=False, default="", server_default="")

    actor = db.relationship("User")
