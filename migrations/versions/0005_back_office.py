"""The organizer's back office and the door: staff roles and API tokens, draft events, sales windows and hidden
ticket types, check-ins, the order history, refund requests and the audit log.

Events that exist already were public before drafts existed: they are published, so nothing disappears
from the shop. Events created from now on start as drafts.

Revision ID: 0005_back_office
Revises: 0004_tickets_reach_holders
"""
import sqlalchemy as sa
from alembic import op

revision = "0005_back_office"
down_revision = "0004_tickets_reach_holders"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("role", sa.String(16), nullable=True))
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False, index=True),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", sa.DateTime, nullable=False, server_default=sa.func.current_timestamp()),
        sa.Column("last_used_at", sa.DateTime, nullable=True),
    )

    with op.batch_alter_table("events") as batch:
        batch.add_column(sa.Column("status", sa.String(16), nullable=False, server_default="draft"))
        batch.create_index("ix_events_status_starts", ["status", "starts_at"])
    events = sa.table("events", sa.column("status", sa.String))
    op.execute(events.update().values(status="published"))

    with op.batch_alter_table("tickets") as batch:
        batch.add_column(sa.Column("on_sale_from", sa.DateTime, nullable=True))
        batch.add_column(sa.Column("on_sale_until", sa.DateTime, nullable=True))
        batch.add_column(sa.Column("hidden", sa.Boolean, nullable=False, server_default="0"))

    with op.batch_alter_table("admissions") as batch:
        batch.add_column(sa.Column("checked_in_at", sa.DateTime, nullable=True))
        batch.add_column(sa.Column("checked_in_by", sa.Integer, nullable=True))
        batch.create_foreign_key("fk_admissions_checked_in_by_users", "users", ["checked_in_by"], ["id"])

    op.create_table(
        "order_history",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("order_id", sa.Integer, sa.ForeignKey("ticket_orders.id"), nullable=False, index=True),
        sa.Column("from_status", sa.String(16), nullable=True),
        sa.Column("to_status", sa.String(16), nullable=False),
        sa.Column("source", sa.String(32), nullable=False, server_default=""),
        sa.Column("cause", sa.String(255), nullable=False, server_default=""),
        sa.Column("actor_id", sa.Integer, sa.ForeignKey("users.id"), nullable=True),
        sa.Column("created_at", sa.DateTime, nullable=False, server_default=sa.func.current_timestamp()),
    )
    op.create_table(
        "refund_requests",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("idempotency_key", sa.String(128), nullable=False, unique=True),
        sa.Column("order_id", sa.Integer, sa.ForeignKey("ticket_orders.id"), nullable=False, index=True),
        sa.Column("amount", sa.Numeric(10, 2), nullable=True),
        sa.Column("reason", sa.String(255), nullable=False, server_default=""),
        sa.Column("requested_by", sa.Integer, sa.ForeignKey("users.id"), nullable=True),
        sa.Column("created_at", sa.DateTime, nullable=False, server_default=sa.func.current_timestamp()),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("created_at", sa.DateTime, nullable=False, server_default=sa.func.current_timestamp(), index=True),
        sa.Column("actor_id", sa.Integer, sa.ForeignKey("users.id"), nullable=True),
        sa.Column("actor_label", sa.String(255), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target_type", sa.String(32), nullable=False),
        sa.Column("target_id", sa.String(64), nullable=False),
        sa.Column("before", sa.Text, nullable=True),
        sa.Column("after", sa.Text, nullable=True),
        sa.Column("note", sa.String(500), nullable=False, server_default=""),
    )
    op.create_index("ix_audit_log_target", "audit_log", ["target_type", "target_id", "created_at"])


def downgrade():
    op.drop_index("ix_audit_log_target", table_name="audit_log")
    op.drop_table("audit_log")
    op.drop_table("refund_requests")
    op.drop_table("order_history")
    with op.batch_alter_table("admissions") as batch:
        batch.drop_constraint("fk_admissions_checked_in_by_users", type_="foreignkey")
        batch.drop_column("checked_in_by")
        batch.drop_column("checked_in_at")
    with op.batch_alter_table("tickets") as batch:
        batch.drop_column("hidden")
        batch.drop_column("on_sale_until")
        batch.drop_column("on_sale_from")
    with op.batch_alter_table("events") as batch:
        batch.drop_index("ix_events_status_starts")
        batch.drop_column("status")
    op.drop_table("api_tokens")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("role")
