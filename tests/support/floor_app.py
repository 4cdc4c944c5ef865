"""The floor for the event page: a bare Flask + Flask-SQLAlchemy + Jinja page showing the same event.

``python -m tests.bench`` serves it with gunicorn under the shop's own worker settings, on the
shop's database, next to the shop. It reads what the event page reads (the event, then its ticket
types: two indexed queries) and renders the same facts and one order form, with none of the shop
around it: no sessions, login, CSRF, rate limits, security headers or audit.
"""
import os

from flask import Flask, abort, render_template_string
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import text

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ event.title }}</title></head>
<body><main>
  <h1>{{ event.title }}</h1>
  <p>{{ event.starts_at.strftime("%A %d %B %Y, %H:%M") }} · {{ event.venue }}</p>
  {% if event.description %}<p>{{ event.description }}</p>{% endif %}
  <h2>Tickets</h2>
  {% for t in ticket_types %}
    <section id="ticket-{{ t.id }}"><h3>{{ t.name }} <span>{{ "%.2f"|format(t.price) }} USD</span></h3>
      {% set left = t.capacity - t.sold_quantity - t.held_quantity %}
      <p>{% if left > 0 %}{{ left }} left{% else %}<strong>Sold out</strong>{% endif %}</p></section>
  {% endfor %}
  <form method="post" action="/events/{{ event.id }}/checkout">
    {% for t in ticket_types %}
      <label for="qty-{{ t.id }}">{{ t.name }}</label>
      <input type="number" name="qty-{{ t.id }}" id="qty-{{ t.id }}" min="0" value="0">
    {% endfor %}
    <label for="email">Email</label><input type="email" name="email" id="email" required>
    <button type="submit">Buy tickets</button>
  </form>
</main></body></html>"""

db = SQLAlchemy()


def create_app():
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = os.environ["DATABASE_URL"]
    threads = int(os.environ.get("GUNICORN_THREADS") or 8)
    # The shop's pool settings (shop/config.py), so both pages wait on the database alike.
    app.config["SQLALCHEMY_ENGINE_OPTIONS"] = {"pool_pre_ping": True, "pool_size": threads + 3, "max_overflow": 5,
                                               "isolation_level": "READ COMMITTED"}
    db.init_app(app)

    @app.get("/events/<int:event_id>")
    def event(event_id):
        found = db.session.execute(text("SELECT id, title, venue, description, starts_at FROM events "
                                        "WHERE id = :id AND status = 'published'"), {"id": event_id}).first()
        if found is None:
            abort(404)
        ticket_types = db.session.execute(text(
            "SELECT id, name, price, capacity, sold_quantity, held_quantity FROM tickets "
            "WHERE event_id = :id AND NOT hidden ORDER BY price, id"), {"id": event_id}).all()
        return render_template_string(PAGE, event=found, ticket_types=ticket_types)

    return app


app = create_app()
