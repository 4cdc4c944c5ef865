"""Flat at data scale: indexes for the queries that would otherwise read a growing table whole.

``stripe_events (processed_at, received_at)``: doctor's unprocessed check and the retention job read
only the rows they are about. ``ticket_orders (paid_at, status, quantity)``: the dashboard's sales per day
reads the last 30 days of sales from the index alone, not every order ever placed.

Revision ID: 0007_scale
Revises: 0006_order_lines
"""
from alembic import op

revision = "0007_scale"
down_revision = "0006_order_lines"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("stripe_events") as batch:
        batch.create_index("ix_stripe_events_processed", ["processed_at", "received_at"])
    with op.batch_alter_table("ticket_orders") as batch:
        batch.create_index("ix_ticket_orders_paid", ["paid_at", "status", "quantity"])


def downgrade():
    with op.batch_alter_table("ticket_orders") as batch:
        batch.drop_index("ix_ticket_orders_paid")
    with op.batch_alter_table("stripe_events") as batch:
        batch.drop_index("ix_stripe_events_processed")
