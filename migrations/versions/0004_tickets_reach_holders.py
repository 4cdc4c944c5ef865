"""Tickets reach their holders: events in their own time zone, the email outbox, verified account emails,
and the payment page a pending order can be resumed on.

Existing events get SHOP_TIMEZONE (default UTC): the zone their times were entered for.

Revision ID: 0004_tickets_reach_holders
Revises: 0003_session_version
"""
import os

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0004_tickets_reach_holders"
down_revision = "0003_session_version"
branch_labels = None
depends_on = None

LONG_TEXT = sa.Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb")


def _shop_timezone():
    try:
        from flask import current_app
        return current_app.config.get("SHOP_TIMEZONE") or "UTC"
    except RuntimeError:  # run outside the app: the environment says it, as the app would read it
        return os.environ.get("SHOP_TIMEZONE") or "UTC"


def upgrade():
    with op.batch_alter_table("events") as batch:
        batch.add_column(sa.Column("timezone", sa.String(64), server_default="UTC", nullable=False))
    zone = _shop_timezone()
    if zone != "UTC":
        events = sa.table("events", sa.column("timezone", sa.String))
        op.execute(events.update().values(timezone=zone))

    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("email_verified_at", sa.DateTime(), nullable=True))

    with op.batch_alter_table("ticket_orders") as batch:
        batch.add_column(sa.Column("checkout_url", sa.String(2000), nullable=True))

    op.create_table(
        "outbox",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("dedupe_key", sa.String(100), nullable=True),
        sa.Column("order_id", sa.Integer(), nullable=True),
        sa.Column("recipient", sa.String(255), nullable=False),
        sa.Column("subject", sa.String(255), nullable=False),
        sa.Column("body_text", LONG_TEXT, nullable=False),
        sa.Column("body_html", LONG_TEXT, nullable=False),
        sa.Column("attachments", LONG_TEXT, nullable=False),
        sa.Column("status", sa.String(16), server_default="waiting", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(), server_default=sa.text("CURRENT_TIMESTAMP"), nullable=False),
        sa.Column("claim_token", sa.String(32), nullable=True),
        sa.Column("claimed_until", sa.DateTime(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(), server_default=sa.text("CURRENT_TIMESTAMP"), nullable=False),
        sa.Column("sent_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("dedupe_key"),
    )
    with op.batch_alter_table("outbox") as batch:
        batch.create_index("ix_outbox_status_due", ["status", "next_attempt_at"])
        batch.create_index("ix_outbox_order_id", ["order_id"])


def downgrade():
    op.drop_table("outbox")
    with op.batch_alter_table("ticket_orders") as batch:
        batch.drop_column("checkout_url")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("email_verified_at")
    with op.batch_alter_table("events") as batch:
        batch.drop_column("timezone")
