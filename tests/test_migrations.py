"""The schema comes from the migrations alone, and they match the models."""
from decimal import Decimal

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask_migrate import downgrade, upgrade

import shop.payments.sandbox.models  # noqa: F401  (its table is in the migrations whichever provider an app runs)
from shop.extensions import db

EXPECTED_COLUMNS = {
    "events": {"id", "title", "description", "venue", "starts_at"},
    "tickets": {"id", "event_id", "name", "price", "capacity", "sold_quantity"},
    "discount_codes": {"id", "code", "percent_off", "amount_off", "max_uses", "used_count", "event_id"},
    "ticket_orders": {"id", "event_id", "ticket_id", "user_id", "email", "quantity", "unit_price", "discount_code_id",
                      "total_amount", "currency", "status", "stripe_checkout_session_id",
                      "stripe_payment_intent_id", "created_at", "paid_at"},
}


def test_migrations_build_the_schema_on_an_empty_database(app, test_databases):
    url = test_databases.create("migrations")
    saved = app.config["SQLALCHEMY_DATABASE_URI"]
    engine = sa.create_engine(url)
    try:
        with app.app_context():
            db.engines[None] = engine  # point the extension at the empty database for this test
            upgrade()
            inspector = sa.inspect(engine)
            for table, columns in EXPECTED_COLUMNS.items():
                assert columns <= {c["name"] for c in inspector.get_columns(table)}, table
            with engine.connect() as conn:
                diff = compare_metadata(MigrationContext.configure(conn), db.metadata)
            assert diff == [], f"models and migrations differ: {diff}"
            downgrade(revision="base")
            assert set(sa.inspect(engine).get_table_names()) == {"alembic_version"}
    finally:
        engine.dispose()
        with app.app_context():
            db.engines[None] = sa.create_engine(saved)


def test_rows_written_without_the_new_columns_still_load(ctx):
    """Older code (or a hand-written INSERT) that knows only the original columns still works."""
    db.session.execute(sa.text("INSERT INTO events (title, starts_at) VALUES ('Legacy', '2099-01-01 20:00')"))
    event_id = db.session.execute(sa.text("SELECT id FROM events WHERE title = 'Legacy'")).scalar_one()
    db.session.execute(sa.text("INSERT INTO tickets (event_id, name, price, capacity) VALUES (:e, 'Old', 10, 5)"),
                       {"e": event_id})
    db.session.commit()
    from shop.services.catalog import event_with_tickets
    event = event_with_tickets(event_id)
    assert event.venue == "" and event.ticket_types[0].remaining == 5


def test_existing_events_get_the_shops_time_zone(app, test_databases, monkeypatch):
    """Events from before events had a zone were entered in SHOP_TIMEZONE's time; they keep that meaning."""
    url = test_databases.create("zones")
    saved = app.config["SQLALCHEMY_DATABASE_URI"]
    engine = sa.create_engine(url)
    monkeypatch.setitem(app.config, "SHOP_TIMEZONE", "Europe/Vienna")
    try:
        with app.app_context():
            db.engines[None] = engine
            upgrade(revision="0003_session_version")
            with engine.begin() as conn:
                conn.execute(sa.text("INSERT INTO events (title, starts_at) VALUES ('Old', '2030-01-01 18:30')"))
            upgrade()
            with engine.connect() as conn:
                assert conn.execute(sa.text("SELECT timezone FROM events")).scalar_one() == "Europe/Vienna"
                assert "outbox" in sa.inspect(engine).get_table_names()
    finally:
        engine.dispose()
        with app.app_context():
            db.engines[None] = sa.create_engine(saved)


def test_single_type_orders_become_one_line_each_keeping_totals_and_admissions(app, test_databases):
    """Orders from before order lines become one line each; their totals and tickets stay as they were."""
    url = test_databases.create("lines")
    saved = app.config["SQLALCHEMY_DATABASE_URI"]
    engine = sa.create_engine(url)
    try:
        with app.app_context():
            db.engines[None] = engine
            upgrade(revision="0005_back_office")
            with engine.begin() as conn:
                conn.execute(sa.text("INSERT INTO events (id, title, starts_at) VALUES (1, 'Old', '2030-01-01 18:30')"))
                conn.execute(sa.text("INSERT INTO tickets (id, event_id, name, price, capacity, sold_quantity) "
                                     "VALUES (7, 1, 'Stalls', 25, 100, 3), (8, 1, 'Circle', 10, 100, 0)"))
                conn.execute(sa.text(
                    "INSERT INTO ticket_orders (id, event_id, ticket_id, email, quantity, unit_price, total_amount, "
                    "currency, status) VALUES (1, 1, 7, 'a@example.com', 3, 22.50, 67.50, 'usd', 'paid'), "
                    "(2, 1, 8, 'b@example.com', 2, 10, 20, 'usd', 'expired')"))
                conn.execute(sa.text("INSERT INTO admissions (order_id, code) VALUES (1, 'AAA'), (1, 'BBB'), "
                                     "(1, 'CCC')"))
            upgrade()
            with engine.connect() as conn:
                lines = conn.execute(sa.text("SELECT order_id, ticket_id, quantity, unit_price, discount_amount "
                                             "FROM order_items ORDER BY order_id")).all()
                assert [tuple(line) for line in lines] == [(1, 7, 3, Decimal("22.50"), Decimal("0.00")),
                                                           (2, 8, 2, Decimal("10.00"), Decimal("0.00"))]
                totals = conn.execute(sa.text("SELECT id, total_amount, quantity FROM ticket_orders ORDER BY id")).all()
                assert [tuple(t) for t in totals] == [(1, Decimal("67.50"), 3), (2, Decimal("20.00"), 2)]
                tied = conn.execute(sa.text("SELECT a.code, i.ticket_id FROM admissions a "
                                            "JOIN order_items i ON i.id = a.order_item_id ORDER BY a.code")).all()
                assert [tuple(t) for t in tied] == [("AAA", 7), ("BBB", 7), ("CCC", 7)]
            downgrade(revision="0005_back_office")
            assert "order_items" not in sa.inspect(engine).get_table_names()
    finally:
        engine.dispose()
        with app.app_context():
            db.engines[None] = sa.create_engine(saved)
