"""Volume for measuring the shop at data scale: years of events, orders, admissions and stored payment events.

``fill_scale`` writes rows with multi-row ``INSERT … SELECT`` statements over MariaDB's SEQUENCE engine
(``seq_1_to_N``), one chunk per statement and transaction: the default volume took 3.5 minutes on a busy
2-core machine, where row-by-row ORM inserts would take hours. It is for a database of its own (a benchmark or a
staging copy), never a live shop: it adds rows beside whatever is there, with ids above the highest ones.

``prune_event_payloads`` is the retention job: old processed events lose their payload and keep their id.
"""
import logging
from dataclasses import dataclass
from datetime import timedelta

from flask import current_app
from sqlalchemy import create_engine, func, select, text, update
from sqlalchemy.pool import NullPool

from ..extensions import db
from ..models import Admission, Event, TicketOrder, TicketType, User
from ..models.base import utcnow
from ..models.payment_events import PaymentEvent
from ..services.transactions import transaction

logger = logging.getLogger(__name__)

CHUNK = 20_000

# Stripe retries a webhook for up to three days; a payload is dropped no sooner than this, and the id never.
SHORTEST_RETENTION = timedelta(days=4)


class ScaleError(Exception):
    """The database cannot be filled (not MariaDB, or its SEQUENCE engine is missing)."""


@dataclass(frozen=True)
class Volume:
    """How much to write; the defaults are the issue's 'years of a busy shop'."""
    events: int = 10_000
    upcoming_share: float = 0.05       # the rest are in the past
    orders: int = 1_000_000
    admissions_per_order: int = 2
    stored_events: int = 1_000_000
    big_buyer_orders: int = 500
    big_buyer_email: str = "big.buyer@example.com"
    big_buyer_password: str = "big-buyer-password"


def _next_id(column):
    return (db.session.execute(select(func.max(column))).scalar() or 0)


def _bulk_engine():
    """An engine of its own for the bulk statements: the shop's socket timeouts (seconds, sized for a
    request) would cut off a statement writing tens of thousands of rows on a busy machine."""
    options = current_app.config["SQLALCHEMY_ENGINE_OPTIONS"]
    connect_args = {**options.get("connect_args", {}), "read_timeout": 600, "write_timeout": 600,
                    # The ids are computed to match; checking each foreign key row by row would double the time.
                    "init_command": "SET SESSION foreign_key_checks = 0, unique_checks = 0"}
    return create_engine(db.engine.url, connect_args=connect_args, poolclass=NullPool)


def _chunked(engine, total, statement, **params):
    """Run ``statement`` (rows numbered ``seq + :offset``) over 1..total in chunks, a transaction each."""
    done = 0
    while done < total:
        size = min(CHUNK, total - done)
        # The SEQUENCE engine's numbers are unsigned: signed, they can count down to past dates.
        rows = f"(SELECT CAST(seq AS SIGNED) AS seq FROM seq_1_to_{size}) AS numbers"
        with engine.begin() as connection:
            connection.execute(text(statement.format(seq=rows)), {**params, "offset": done})
        done += size


def _check_engine():
    if db.engine.dialect.name not in ("mysql", "mariadb"):
        raise ScaleError("fill-scale needs MariaDB (DATABASE_URL is not a MySQL/MariaDB URL)")
    with transaction():
        has_sequence = db.session.execute(
            text("SELECT COUNT(*) FROM information_schema.engines WHERE engine = 'SEQUENCE' "
                 "AND support IN ('YES', 'DEFAULT')")).scalar()
    if not has_sequence:
        raise ScaleError("fill-scale needs MariaDB's SEQUENCE engine (MariaDB 10.0.3 or later)")


def _fill_events(engine, volume, base_event, base_ticket):
    upcoming = int(volume.events * volume.upcoming_share)
    past = volume.events - upcoming
    # Past events every 4 hours back from now, upcoming ones every 4 hours ahead.
    _chunked(engine, volume.events, """
        INSERT INTO events (id, title, description, venue, starts_at, created_at, timezone, status)
        SELECT :base + seq + :offset, CONCAT('Concert ', seq + :offset), 'A night of music.',
               CONCAT('Hall ', (seq + :offset) % 50), UTC_TIMESTAMP() + INTERVAL ((seq + :offset - :past) * 4) HOUR,
               UTC_TIMESTAMP() - INTERVAL 400 DAY, 'UTC', 'published'
        FROM {seq}""", base=base_event, past=past)
    _chunked(engine, volume.events, """
        INSERT INTO tickets (id, event_id, name, price, capacity, sold_quantity, held_quantity, hidden)
        SELECT :tbase + seq + :offset, :ebase + seq + :offset, 'General admission', 20 + (seq + :offset) % 30,
               :capacity, :sold, 0, 0
        FROM {seq}""", tbase=base_ticket, ebase=base_event,
             capacity=2 * volume.orders // volume.events * volume.admissions_per_order,
             sold=volume.orders // volume.events * volume.admissions_per_order)


def _fill_orders(engine, volume, base_event, base_ticket, base_order, buyer_id):
    # Order n belongs to event n mod events; nine in ten are paid, the rest expired, cancelled or refunded.
    # The first big_buyer_orders belong to one account.
    _chunked(engine, volume.orders, """
        INSERT INTO ticket_orders (id, event_id, ticket_id, user_id, email, quantity, unit_price, total_amount,
                                   currency, status, created_at, paid_at, hold_expires_at, refunded_amount,
                                   needs_attention, attention_reason, updated_at)
        SELECT o.id, o.event_id, o.event_id - :ebase + :tbase,
               IF(o.n <= :buyer_orders, :buyer_id, NULL),
               IF(o.n <= :buyer_orders, :buyer_email, CONCAT('buyer', o.n % 200000, '@example.com')),
               :per_order, 20, 20 * :per_order, 'usd',
               ELT(1 + o.n % 20, 'expired', 'cancelled', 'paid', 'paid', 'paid', 'paid', 'paid', 'paid', 'paid',
                   'paid', 'paid', 'paid', 'paid', 'paid', 'paid', 'paid', 'paid', 'paid', 'paid', 'refunded'),
               o.at, IF(o.n % 20 IN (0, 1), NULL, o.at), o.at + INTERVAL 30 MINUTE,
               IF(o.n % 20 = 19, 20 * :per_order, 0), 0, '', o.at
        FROM (SELECT seq + :offset AS n, :obase + seq + :offset AS id,
                     :ebase + 1 + (seq + :offset) % :events AS event_id,
                     UTC_TIMESTAMP() - INTERVAL ((seq + :offset) % 365) DAY
                                     - INTERVAL ((seq + :offset) % 1440) MINUTE AS at
              FROM {seq}) AS o""",
             ebase=base_event, tbase=base_ticket, obase=base_order, events=volume.events, buyer_id=buyer_id,
             buyer_orders=volume.big_buyer_orders, buyer_email=volume.big_buyer_email,
             per_order=volume.admissions_per_order)


def _fill_admissions(engine, volume, base_order, base_admission):
    per_order = volume.admissions_per_order
    _chunked(engine, volume.orders * per_order, """
        INSERT INTO admissions (id, order_id, code, void, checked_in_at)
        SELECT :abase + seq + :offset, :obase + 1 + (seq + :offset - 1) DIV :per_order,
               CONCAT('FILL', :abase + seq + :offset, 'X', (seq + :offset) % 9973), 0, NULL
        FROM {seq}""", abase=base_admission, obase=base_order, per_order=per_order)


def _fill_stored_events(engine, volume, base_order):
    _chunked(engine, volume.stored_events, """
        INSERT INTO stripe_events (id, type, delivered_by, processed_by, received_at, processed_at, order_id,
                                   outcome, outcome_kind, outcome_reason, outcome_status, payload)
        SELECT CONCAT('fill_', UUID_SHORT(), '_', seq + :offset), 'fill.paid', 'webhook', 'webhook',
               e.at, e.at, e.order_id, 'paid', 'applied', 'state_changed', 'paid',
               CONCAT('{{"id": "fill_', seq + :offset, '", "object": "event", "data": {{}}}}')
        FROM (SELECT seq, :obase + 1 + (seq + :offset - 1) % :orders AS order_id,
                     UTC_TIMESTAMP() - INTERVAL ((seq + :offset) % 365) DAY AS at FROM {seq}) AS e""",
             obase=base_order, orders=volume.orders)


def _big_buyer(volume):
    with transaction():
        user = db.session.execute(select(User).where(User.email == volume.big_buyer_email)).scalar_one_or_none()
        if user is None:
            user = User(email=volume.big_buyer_email, email_verified_at=utcnow())
            user.set_password(volume.big_buyer_password)
            db.session.add(user)
            db.session.flush()
        return user.id


def fill_scale(volume=Volume(), progress=lambda step: None):
    """Add ``volume`` of realistic rows; returns ``{table: rows added}``. MariaDB only; raises ScaleError."""
    _check_engine()
    buyer_id = _big_buyer(volume)
    with transaction():
        base_event, base_ticket = _next_id(Event.id), _next_id(TicketType.id)
        base_order, base_admission = _next_id(TicketOrder.id), _next_id(Admission.id)
    engine = _bulk_engine()
    progress("events and ticket types")
    _fill_events(engine, volume, base_event, base_ticket)
    progress("orders")
    _fill_orders(engine, volume, base_event, base_ticket, base_order, buyer_id)
    progress("admissions")
    _fill_admissions(engine, volume, base_order, base_admission)
    progress("stored payment events")
    _fill_stored_events(engine, volume, base_order)
    with engine.begin() as connection:
        # Fresh statistics, so the optimizer plans for the new sizes at once.
        connection.execute(text("ANALYZE TABLE events, tickets, ticket_orders, admissions, stripe_events"))
    engine.dispose()
    logger.info("filled: %s events, %s orders, %s admissions, %s stored events", volume.events, volume.orders,
                volume.orders * volume.admissions_per_order, volume.stored_events)
    return {"events": volume.events, "tickets": volume.events, "ticket_orders": volume.orders,
            "admissions": volume.orders * volume.admissions_per_order, "stripe_events": volume.stored_events}


def prune_event_payloads(older_than, now=None, batch=10_000):
    """Drop the payload of processed events received more than ``older_than`` ago; returns how many.

    The row and its id stay (the primary key is what recognises a redelivery), and so do events not
    processed yet: their payload is what a retry needs. Batches of ``batch`` rows keep each lock short.
    """
    if older_than < SHORTEST_RETENTION:
        raise ValueError(f"payloads are kept at least {SHORTEST_RETENTION.days} days: Stripe still retries")
    cutoff = (now or utcnow()) - older_than
    pruned = 0
    while True:
        with transaction():
            ids = db.session.execute(
                select(PaymentEvent.id).where(PaymentEvent.processed_at.isnot(None),
                                              PaymentEvent.processed_at < cutoff, PaymentEvent.payload.isnot(None))
                .limit(batch)).scalars().all()
            if ids:
                db.session.execute(update(PaymentEvent).where(PaymentEvent.id.in_(ids)).values(payload=None))
        pruned += len(ids)
        if len(ids) < batch:
            break
    logger.info("pruned the payloads of %s processed events older than %s", pruned, cutoff)
    return pruned
