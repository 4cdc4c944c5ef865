"""CSV exports: the documented columns in their order, safe cells, and memory that stays flat over 100,000 rows."""
import csv
import io
import time
import tracemalloc
from decimal import Decimal

import pytest
from sqlalchemy import insert

from shop.extensions import db
from shop.models import TicketOrder
from shop.services.exports import ATTENDEE_COLUMNS, ORDER_COLUMNS


def rows_of(response):
    return list(csv.reader(io.StringIO(response.get_data(as_text=True))))


def test_orders_csv_has_the_documented_columns_in_order(form_client, staff, make, place_order, pay, ctx):
    staff.login("admin")
    ticket = make.ticket(name="Floor", price="20.00")
    make.discount("HALF", percent_off=50)
    paid = pay(place_order(ticket, quantity=2, email="ada@example.com", discount_code="half"))
    pending = place_order(ticket, email="=cmd|'/c calc'!A1@evil.example")

    response = form_client.get(f"/console/events/{ticket.event_id}/orders.csv")

    assert response.status_code == 200 and response.mimetype == "text/csv"
    assert response.headers["Content-Disposition"] == f'attachment; filename="event-{ticket.event_id}-orders.csv"'
    header, first, second = rows_of(response)
    assert tuple(header) == ORDER_COLUMNS == (
        "order_id", "created_at", "paid_at", "status", "email", "ticket_type", "quantity", "unit_price",
        "discount_code", "total_amount", "refunded_amount", "currency", "payment_ref")
    assert first[0] == str(paid.id) and first[3:] == ["paid", "ada@example.com", "Floor", "2", "10.00", "HALF",
                                                      "20.00", "0.00", "usd", paid.payment_ref]
    assert first[2] == paid.paid_at.isoformat(timespec="seconds")
    assert second[0] == str(pending.id) and second[2] == "" and second[4].startswith("'=")  # text, not a formula


def test_attendees_csv_lists_each_ticket_with_its_check_in(form_client, staff, make, place_order, pay, ctx):
    door = staff.login("admin")
    ticket = make.ticket(name="Floor")
    order = pay(place_order(ticket, quantity=2, email="ada@example.com"))
    form_client.post(f"/console/events/{ticket.event_id}/checkin", json={"code": order.admissions[0].code})

    header, *rows = rows_of(form_client.get(f"/console/events/{ticket.event_id}/attendees.csv"))

    assert tuple(header) == ATTENDEE_COLUMNS == ("ticket_code", "order_id", "email", "ticket_type", "valid",
                                                 "checked_in_at", "checked_in_by", "attendee_name")
    assert [r[:5] for r in rows] == [[a.code, str(order.id), "ada@example.com", "Floor", "yes"]
                                     for a in order.admissions]
    assert rows[0][6] == door.email and rows[0][5] and rows[1][5:] == ["", "", ""]


def insert_orders(event_id, ticket_id, count, start=0):
    """``count`` paid orders straight into the table, 10,000 per statement."""
    for offset in range(start, start + count, 10_000):
        db.session.execute(insert(TicketOrder), [
            {"event_id": event_id, "ticket_id": ticket_id, "email": f"fan{n}@example.com", "quantity": 1,
             "unit_price": Decimal("10.00"), "total_amount": Decimal("10.00"), "currency": "usd", "status": "paid"}
            for n in range(offset, min(offset + 10_000, start + count))])
        db.session.commit()


def streamed_peak(client, url):
    """(rows, peak bytes allocated from the request until its body was read, seconds)."""
    tracemalloc.start()
    began = time.perf_counter()
    lines = 0
    try:
        response = client.get(url)  # the test client leaves the body unread: it is produced as it is iterated
        for chunk in response.response:
            lines += chunk.count(b"\n") if isinstance(chunk, bytes) else chunk.count("\n")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        response.close()
    return lines - 1, peak, time.perf_counter() - began


@pytest.mark.slow
def test_the_orders_csv_is_streamed_memory_stays_flat_over_100000_rows(form_client, staff, make, ctx, capsys):
    staff.login("admin")
    ticket = make.ticket()
    url = f"/console/events/{ticket.event_id}/orders.csv"
    insert_orders(ticket.event_id, ticket.id, 10_000)
    streamed_peak(form_client, url)  # warm-up: compiled statements and caches are not the export's memory

    rows_10k, peak_10k, _ = streamed_peak(form_client, url)
    insert_orders(ticket.event_id, ticket.id, 90_000, start=10_000)
    rows_100k, peak_100k, seconds = streamed_peak(form_client, url)

    with capsys.disabled():
        print(f"\norders.csv: 10,000 rows peak {peak_10k / 1e6:.2f} MB; 100,000 rows peak {peak_100k / 1e6:.2f} MB "
              f"in {seconds:.1f} s (under tracemalloc)")
    assert (rows_10k, rows_100k) == (10_000, 100_000)
    # Ten times the rows, about the same memory: one batch at a time. Whole, the CSV alone is ~9 MB.
    assert peak_100k < 4_000_000 and peak_100k < peak_10k * 1.5
