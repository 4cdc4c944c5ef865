"""The schema comes from the migrations alone, and they match the models."""
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
