"""The payment boundary: typed event outcomes, the delivery that processed each event, the sandbox's
own table, and the buyer's address on orders for the pending caps.

Revision ID: 0002_payment_boundary
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

revision = "0002_payment_boundary"
down_revision = "0001"
branch_labels = None
depends_on = None

# Outcomes the code before typed outcomes stored as text, mapped onto (kind, reason).
TEXT_OUTCOMES = [
    ("duplicate", "duplicate", "duplicate"),
    ("ignored: no order_id%", "ignored", "no_order_id"),
    ("ignored: Stripe does not know%", "ignored", "not_ours"),
    ("ignored: refund of a payment%", "ignored", "not_ours"),
    ("ignored: the event's object has no%", "ignored", "no_reference"),
    ("ignored: order % does not exist", "ignored", "unknown_order"),
    ("ignored: % is not handled", "ignored", "not_handled"),
    ("refused:%", "flagged", "mismatch"),
    ("refund failed%", "flagged", "refund_failed"),
    ("unchanged: checkout still open", "unchanged", "still_open"),
    ("unchanged: already%", "unchanged", "already"),
    ("unchanged: no seats%", "unchanged", "awaiting_delayed_payment"),
    ("unchanged:%", "unchanged", "stale"),
    ("partially refunded", "applied", "partial_refund"),
]
STATUSES = ["pending", "processing", "paid", "expired", "cancelled", "failed", "refunded"]


def upgrade():
    with op.batch_alter_table("stripe_events") as batch:
        batch.add_column(sa.Column("processed_by", sa.String(32), nullable=True))
        batch.add_column(sa.Column("outcome_kind", sa.String(16), nullable=True))
        batch.add_column(sa.Column("outcome_reason", sa.String(32), nullable=True))
        batch.add_column(sa.Column("outcome_status", sa.String(16), nullable=True))
        batch.create_index("ix_stripe_events_outcome", ["outcome_reason", "received_at"])
    events = sa.table("stripe_events", sa.column("outcome", sa.String), sa.column("outcome_kind", sa.String),
                      sa.column("outcome_reason", sa.String), sa.column("outcome_status", sa.String),
                      sa.column("processed_at", sa.DateTime), sa.column("processed_by", sa.String),
                      sa.column("delivered_by", sa.String))
    op.execute(events.update().where(events.c.processed_at.isnot(None)).values(processed_by=events.c.delivered_by))
    for status in STATUSES:
        op.execute(events.update().where(events.c.outcome == status, events.c.outcome_kind.is_(None))
                   .values(outcome_kind="applied", outcome_reason="state_changed", outcome_status=status))
    for pattern, kind, reason in TEXT_OUTCOMES:
        op.execute(events.update().where(events.c.outcome.like(pattern), events.c.outcome_kind.is_(None))
                   .values(outcome_kind=kind, outcome_reason=reason))

    with op.batch_alter_table("ticket_orders") as batch:
        batch.add_column(sa.Column("client_ip", sa.String(45), nullable=True))
        batch.create_index("ix_ticket_orders_email_status", ["email", "status", "hold_expires_at"])
        batch.create_index("ix_ticket_orders_ip_status", ["client_ip", "status", "hold_expires_at"])

    # The sandbox kept Stripe-shaped JSON; it now keeps its checkouts in its own terms. Sandbox
    # data is demo data: nothing was ever charged, so nothing is carried over.
    op.drop_table("sandbox_objects")
    op.create_table(
        "sandbox_checkouts",
        sa.Column("ref", sa.String(64), primary_key=True),
        sa.Column("order_id", sa.Integer, nullable=False, index=True),
        sa.Column("order_token", sa.String(64), nullable=False),
        sa.Column("idempotency_key", sa.String(64), nullable=False, unique=True),
        sa.Column("email", sa.String(255), nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("amount", sa.Numeric(10, 2), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("status", sa.String(16), nullable=False, server_default="open"),
        sa.Column("payment_ref", sa.String(64), nullable=True, unique=True),
        sa.Column("refunded", sa.Numeric(10, 2), nullable=False, server_default="0"),
        sa.Column("success_url", sa.String(2000), nullable=False),
        sa.Column("cancel_url", sa.String(2000), nullable=False),
        sa.Column("expires_at", sa.DateTime, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False, server_default=sa.func.current_timestamp()),
    )


def downgrade():
    op.drop_table("sandbox_checkouts")
    op.create_table("sandbox_objects", sa.Column("id", sa.String(64), primary_key=True),
                    sa.Column("body", sa.Text, nullable=False))
    with op.batch_alter_table("ticket_orders") as batch:
        batch.drop_index("ix_ticket_orders_ip_status")
        batch.drop_index("ix_ticket_orders_email_status")
        batch.drop_column("client_ip")
    with op.batch_alter_table("stripe_events") as batch:
        batch.drop_index("ix_stripe_events_outcome")
        for column in ("outcome_status", "outcome_reason", "outcome_kind", "processed_by"):
            batch.drop_column(column)
