"""Benchmark at data scale: ``python -m tests.bench_scale`` prints each page and query's time on a small and a
large database, side by side, with the machine's load.

Both databases are filled by ``flask shop fill-scale`` (the small one with a hundredth of the volume, the
same big buyer with 500 orders). Each page is requested through the Flask test client (the whole request:
routing, queries, template) ``--repeat`` times after a warm-up; the table shows the median. The goal is a
large/small ratio under 2 for every row. ``--large-url`` reuses a database filled before (filling the full
volume takes minutes); otherwise one is filled on the test server and dropped afterwards.
"""
import argparse
import os
import statistics
import subprocess
import time

from sqlalchemy import select

from shop.extensions import db
from shop.models import Admission, Event, TicketOrder, User
from shop.models.base import utcnow
from shop.ops.doctor import run_checks
from shop.ops.scale import Volume, fill_scale
from shop.services.sweeper import sweep
from tests.support.apps import TestDatabases, app_from_environment, build_schema, release_connections, shop_environment

ADMIN_EMAIL, ADMIN_PASSWORD = "scale.admin@example.com", "scale-admin-password"
HEALTH_TOKEN = "bench-health-token-0123456789abcdef"


def load():
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip().split("load average: ")[-1]


def _app(url):
    env = shop_environment(database_url=url, sandbox=True, SHOP_HEALTH_TOKEN=HEALTH_TOKEN)
    return app_from_environment(env, {"WTF_CSRF_ENABLED": False})


def fill(url, volume):
    """Build the schema on ``url`` and fill it; returns seconds taken by the fill."""
    app = _app(url)
    build_schema(app)
    with app.app_context():
        started = time.monotonic()
        fill_scale(volume)
        return time.monotonic() - started


def _ensure_admin():
    admin = db.session.execute(select(User).where(User.email == ADMIN_EMAIL)).scalar_one_or_none()
    if admin is None:
        admin = User(email=ADMIN_EMAIL, role="admin", email_verified_at=utcnow())
        admin.set_password(ADMIN_PASSWORD)
        db.session.add(admin)
        db.session.commit()


def _targets():
    """The ids the pages need: an upcoming event with sales, the big buyer's latest order and one of its codes."""
    buyer = db.session.execute(select(User).where(User.email == Volume.big_buyer_email)).scalar_one()
    order = db.session.execute(select(TicketOrder).where(TicketOrder.user_id == buyer.id)
                               .order_by(TicketOrder.id.desc()).limit(1)).scalar_one()
    code = db.session.execute(select(Admission.code).where(Admission.order_id == order.id).limit(1)).scalar_one()
    event_id = db.session.execute(select(Event.id).where(Event.starts_at > utcnow()).order_by(Event.starts_at)
                                  .limit(1)).scalar_one()
    db.session.commit()
    return order.id, code, event_id


def _median_ms(run, repeat):
    run()  # warm-up: caches, pool, compiled statements
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def _get(client, path, **kw):
    def run():
        response = client.get(path, **kw)
        assert response.status_code == 200, (path, response.status_code)
        response.get_data()
    return run


def _in_context(app, work):
    def run():
        with app.app_context():
            work()
    return run


def measure(url, repeat):
    """``{row name: median ms}`` on the database at ``url``."""
    app = _app(url)
    with app.app_context():
        _ensure_admin()
        order_id, code, event_id = _targets()
    # Requests run outside any app context of ours: each gets its own, so each client is its own user.
    buyer, admin, anonymous = app.test_client(), app.test_client(), app.test_client()
    assert buyer.post("/login", data={"email": Volume.big_buyer_email,
                                      "password": Volume.big_buyer_password}).status_code == 302
    assert admin.post("/login", data={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}).status_code == 302
    rows = {
        "home page (page 1)": _get(anonymous, "/"),
        "event page": _get(anonymous, f"/events/{event_id}"),
        "big buyer's profile (page 1)": _get(buyer, "/profile"),
        "big buyer's profile (page 5)": _get(buyer, "/profile?page=5"),
        "order page": _get(buyer, f"/orders/{order_id}"),
        "ticket page": _get(anonymous, f"/tickets/{code}"),
        "console dashboard": _get(admin, "/console/"),
        "export orders.csv": _get(admin, f"/console/events/{event_id}/orders.csv"),
        "/healthz (detailed)": _get(anonymous, "/healthz", headers={"Authorization": f"Bearer {HEALTH_TOKEN}"}),
        "sweeper's query (sweep)": _in_context(app, lambda: sweep(path="bench")),
        "doctor": _in_context(app, run_checks),
    }
    results = {name: _median_ms(run, repeat) for name, run in rows.items()}
    release_connections(app)
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--large-url", help="a database filled by `flask shop fill-scale` before (default: fill one)")
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    os.environ.setdefault("SHOP_LOG_LEVEL", "WARNING")
    databases = TestDatabases()
    small_volume = Volume(events=100, orders=10_000, stored_events=10_000)
    try:
        fill_load_before = load()
        small_fill = fill(databases.create("small"), small_volume)
        large_url, large_fill = args.large_url, None
        if large_url is None:
            large_url = databases.create("large")
            large_fill = fill(large_url, Volume())
        fill_load_after = load()
        print(f"fill: small {small_fill:.0f} s"
              + (f", large {large_fill:.0f} s" if large_fill is not None else ", large reused")
              + f" (load {fill_load_before} → {fill_load_after})")
        for run in (1, 2):
            before = load()
            small = measure(databases.url("small"), args.repeat)
            large = measure(large_url, args.repeat)
            print(f"\nrun {run}: load average before {before}, after {load()}; median of {args.repeat}, ms")
            print(f"{'page / query':32} {'small':>9} {'large':>9} {'ratio':>6}  goal ≤ 2×")
            for name in small:
                ratio = large[name] / small[name]
                print(f"{name:32} {small[name]:9.1f} {large[name]:9.1f} {ratio:6.2f}  {'ok' if ratio <= 2 else 'MISS'}")
    finally:
        databases.drop_all()


if __name__ == "__main__":
    main()
