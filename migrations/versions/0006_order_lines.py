"""Orders with several ticket types: one line per type in ``order_items``, admissions tied to their line;
quotas, limits shared by several ticket types of an event; attendee names (per event: none, optional
or required; per admission).

Every existing order becomes one line (its ticket type, quantity and unit price, no discount amount
known per line: the unit price already is the price paid), and its admissions point at that line, so
totals, seat counters and tickets are unchanged.

Revision ID: 0006_order_lines
Revises: 0005_back_office
"""
import sqlalchemy as sa
from alembic import op

revision = "0006_order_lines"
down_revision = "0005_back_office"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("events") as batch:
        batch.add_column(sa.Column("attendee_names", sa.String(16), nullable=False, server_default="none"))
    op.create_table(
        "quotas",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("event_id", sa.Integer, sa.ForeignKey("events.id"), nullable=False, index=True),
        sa.Column("name", sa.String(120), nullable=False),
        sa.Column("capacity", sa.Integer, nullable=False),
        sa.Column("sold_quantity", sa.Integer, nullable=False, server_default="0"),
        sa.Column("held_quantity", sa.Integer, nullable=False, server_default="0"),
        sa.Column("event_wide", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.CheckConstraint("sold_quantity >= 0 AND held_quantity >= 0", name="ck_quotas_counts_non_negative"),
    )
    op.create_table(
        "quota_tickets",
        sa.Column("quota_id", sa.Integer, sa.ForeignKey("quotas.id"), primary_key=True),
        sa.Column("ticket_id", sa.Integer, sa.ForeignKey("tickets.id"), primary_key=True, index=True),
    )
    op.create_table(
        "order_items",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("order_id", sa.Integer, sa.ForeignKey("ticket_orders.id"), nullable=False),
        sa.Column("ticket_id", sa.Integer, sa.ForeignKey("tickets.id"), nullable=False, index=True),
        sa.Column("quantity", sa.Integer, nullable=False),
        sa.Column("unit_price", sa.Numeric(10, 2), nullable=False),
        sa.Column("discount_amount", sa.Numeric(10, 2), nullable=False, server_default="0"),
        sa.Column("refunded_quantity", sa.Integer, nullable=False, server_default="0"),
        sa.Column("attendee_names", sa.Text, nullable=True),
        sa.UniqueConstraint("order_id", "ticket_id", name="uq_order_items_order_ticket"),
    )
    # One INSERT … SELECT: the copy is done by the database, however many orders there are.
    op.execute("INSERT INTO order_items (order_id, ticket_id, quantity, unit_price, discount_amount) "
               "SELECT id, ticket_id, quantity, unit_price, 0 FROM ticket_orders")
    with op.batch_alter_table("admissions") as batch:
        batch.add_column(sa.Column("order_item_id", sa.Integer, nullable=True))
        batch.add_column(sa.Column("attendee_name", sa.String(120), nullable=True))
        batch.create_index("ix_admissions_order_item_id", ["order_item_id"])
        batch.create_foreign_key("fk_admissions_order_item", "order_items", ["order_item_id"], ["id"])
    op.execute("UPDATE admissions SET order_item_id = "
               "(SELECT order_items.id FROM order_items WHERE order_items.order_id = admissions.order_id)")


def downgrade():
    with op.batch_alter_table("events") as batch:
        batch.drop_column("attendee_names")
    with op.batch_alter_table("admissions") as batch:
        batch.drop_column("attendee_name")
        batch.drop_constraint("fk_admissions_order_item", type_="foreignkey")
        batch.drop_index("ix_admissions_order_item_id")
        batch.drop_column("order_item_id")
    op.drop_table("order_items")
    op.drop_table("quota_tickets")
    op.drop_table("quotas")
