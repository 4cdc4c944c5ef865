"""The shop's schema: catalogue, orders and admissions, accounts, Stripe events, sandbox objects.

Revision ID: 0001
Revises: 
Create Date: 2026-11-27 00:08:05.935536

"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import mysql


# revision identifiers, used by Alembic.
revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('delivery_paths',
    sa.Column('name', sa.String(length=32), nullable=False),
    sa.Column('last_delivered_at', sa.DateTime(), nullable=False),
    sa.Column('deliveries', sa.Integer(), server_default='0', nullable=False),
    sa.PrimaryKeyConstraint('name')
    )
    op.create_table('events',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('title', sa.String(length=200), nullable=False),
    sa.Column('description', sa.Text(), server_default='', nullable=False),
    sa.Column('venue', sa.String(length=200), server_default='', nullable=False),
    sa.Column('starts_at', sa.DateTime(), nullable=False),
    sa.Column('created_at', sa.DateTime(), server_default=sa.text('CURRENT_TIMESTAMP'), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_events_starts_at'), ['starts_at'], unique=False)
        batch_op.create_index('ix_events_upcoming', ['starts_at', 'id'], unique=False)

    op.create_table('sandbox_objects',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('stripe_events',
    sa.Column('id', sa.String(length=255), nullable=False),
    sa.Column('type', sa.String(length=100), nullable=False),
    sa.Column('delivered_by', sa.String(length=32), nullable=False),
    sa.Column('received_at', sa.DateTime(), server_default=sa.text('CURRENT_TIMESTAMP'), nullable=False),
    sa.Column('processed_at', sa.DateTime(), nullable=True),
    sa.Column('order_id', sa.Integer(), nullable=True),
    sa.Column('outcome', sa.String(length=64), server_default='', nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('payload', sa.Text().with_variant(mysql.MEDIUMTEXT(), 'mysql', 'mariadb'), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('stripe_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_stripe_events_order_id'), ['order_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_stripe_events_received_at'), ['received_at'], unique=False)

    op.create_table('users',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('email', sa.String(length=255), nullable=False),
    sa.Column('password_hash', sa.String(length=255), nullable=False),
    sa.Column('created_at', sa.DateTime(), server_default=sa.text('CURRENT_TIMESTAMP'), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('email')
    )
    op.create_table('discount_codes',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('code', sa.String(length=64), nullable=False),
    sa.Column('percent_off', sa.Integer(), nullable=True),
    sa.Column('amount_off', sa.Numeric(precision=10, scale=2), nullable=True),
    sa.Column('max_uses', sa.Integer(), nullable=True),
    sa.Column('used_count', sa.Integer(), server_default='0', nullable=False),
    sa.Column('reserved_count', sa.Integer(), server_default='0', nullable=False),
    sa.Column('event_id', sa.Integer(), nullable=True),
    sa.Column('valid_from', sa.DateTime(), nullable=True),
    sa.Column('valid_until', sa.DateTime(), nullable=True),
    sa.CheckConstraint('(percent_off IS NULL) <> (amount_off IS NULL)', name='ck_discount_one_kind'),
    sa.CheckConstraint('used_count >= 0 AND reserved_count >= 0', name='ck_discount_counts_non_negative'),
    sa.ForeignKeyConstraint(['event_id'], ['events.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('code')
    )
    with op.batch_alter_table('discount_codes', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_discount_codes_event_id'), ['event_id'], unique=False)

    op.create_table('tickets',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('event_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=120), nullable=False),
    sa.Column('price', sa.Numeric(precision=10, scale=2), nullable=False),
    sa.Column('capacity', sa.Integer(), nullable=False),
    sa.Column('sold_quantity', sa.Integer(), server_default='0', nullable=False),
    sa.Column('held_quantity', sa.Integer(), server_default='0', nullable=False),
    sa.CheckConstraint('sold_quantity >= 0 AND held_quantity >= 0', name='ck_tickets_counts_non_negative'),
    sa.ForeignKeyConstraint(['event_id'], ['events.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('tickets', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_tickets_event_id'), ['event_id'], unique=False)

    op.create_table('ticket_orders',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('event_id', sa.Integer(), nullable=False),
    sa.Column('ticket_id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=True),
    sa.Column('email', sa.String(length=255), nullable=False),
    sa.Column('quantity', sa.Integer(), nullable=False),
    sa.Column('unit_price', sa.Numeric(precision=10, scale=2), nullable=False),
    sa.Column('discount_code_id', sa.Integer(), nullable=True),
    sa.Column('total_amount', sa.Numeric(precision=10, scale=2), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('status', sa.String(length=16), server_default='pending', nullable=False),
    sa.Column('stripe_checkout_session_id', sa.String(length=255), nullable=True),
    sa.Column('stripe_payment_intent_id', sa.String(length=255), nullable=True),
    sa.Column('created_at', sa.DateTime(), server_default=sa.text('CURRENT_TIMESTAMP'), nullable=False),
    sa.Column('paid_at', sa.DateTime(), nullable=True),
    sa.Column('hold_expires_at', sa.DateTime(), nullable=True),
    sa.Column('refunded_amount', sa.Numeric(precision=10, scale=2), server_default='0', nullable=False),
    sa.Column('needs_attention', sa.Boolean(), server_default='0', nullable=False),
    sa.Column('attention_reason', sa.String(length=255), server_default='', nullable=False),
    sa.Column('checked_at', sa.DateTime(), nullable=True),
    sa.Column('updated_at', sa.DateTime(), server_default=sa.text('CURRENT_TIMESTAMP'), nullable=False),
    sa.ForeignKeyConstraint(['discount_code_id'], ['discount_codes.id'], ),
    sa.ForeignKeyConstraint(['event_id'], ['events.id'], ),
    sa.ForeignKeyConstraint(['ticket_id'], ['tickets.id'], ),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('stripe_checkout_session_id')
    )
    with op.batch_alter_table('ticket_orders', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_ticket_orders_event_id'), ['event_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_ticket_orders_needs_attention'), ['needs_attention'], unique=False)
        batch_op.create_index('ix_ticket_orders_status_hold', ['status', 'hold_expires_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_ticket_orders_stripe_payment_intent_id'), ['stripe_payment_intent_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_ticket_orders_ticket_id'), ['ticket_id'], unique=False)
        batch_op.create_index('ix_ticket_orders_user_created', ['user_id', 'created_at'], unique=False)

    op.create_table('admissions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('order_id', sa.Integer(), nullable=False),
    sa.Column('code', sa.String(length=32), nullable=False),
    sa.Column('void', sa.Boolean(), server_default='0', nullable=False),
    sa.ForeignKeyConstraint(['order_id'], ['ticket_orders.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('code')
    )
    with op.batch_alter_table('admissions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_admissions_order_id'), ['order_id'], unique=False)



def downgrade():
    # Dropping a table drops its indexes; MariaDB refuses to drop an index a foreign key still needs.
    op.drop_table('admissions')
    op.drop_table('ticket_orders')
    op.drop_table('tickets')
    op.drop_table('discount_codes')
    op.drop_table('users')
    op.drop_table('stripe_events')
    op.drop_table('sandbox_objects')
    op.drop_table('events')
    op.drop_table('delivery_paths')
