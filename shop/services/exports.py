"""CSV exports of an event's orders and attendees, produced row by row.

The rows come from a server-side cursor (``yield_per``: the driver fetches a batch at a time,
never the whole result) and leave as CSV lines as they are read, so an export of 100,000
orders holds one batch in memory, not 100,000 rows. Plain columns are selected, not ORM
objects, so nothing accumulates in the session either.

The column order is part of the contract (spreadsheets and scripts read it by position);
add columns only at the end:

``orders.csv``
    order_id, created_at, paid_at, status, email, ticket_type, quantity, unit_price,
    discount_code, total_amount, refunded_amount, currency, payment_ref
``attendees.csv``
    ticket_code, order_id, email, ticket_type, valid, checked_in_at, checked_in_by

Times are UTC in ISO 8601 (``2027-03-01T19:30:00``); amounts are decimals with two places.
"""
import csv
import io

from sqlalchemy import func, select
from sqlalchemy.orm import aliased

from ..extensions import db
from ..models import Admission, DiscountCode, OrderItem, TicketOrder, TicketType, User

ORDER_COLUMNS = ("order_id", "created_at", "paid_at", "status", "email", "ticket_type", "quantity", "unit_price",
                 "discount_code", "total_amount", "refunded_amount", "currency", "payment_ref")
ATTENDEE_COLUMNS = ("ticket_code", "order_id", "email", "ticket_type", "valid", "checked_in_at", "checked_in_by",
                    "attendee_name")
BATCH = 1000
# A cell starting with one of these is a formula to a spreadsheet: an email like "=HYPERLINK(…)" must stay text.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _cell(value):
    if value is None:
        return ""
    if hasattr(value, "isoformat"):
        return value.isoformat(timespec="seconds")
    text = str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def _lines(header, rows):
    """The CSV text of ``header`` then each row, one chunk per batch of rows."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(header)
    for count, row in enumerate(rows, 1):
        writer.writerow([_cell(value) for value in row])
        if count % BATCH == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def _streamed(query):
    return db.session.execute(query.execution_options(yield_per=BATCH))


def orders_csv(event_id):
    """The event's orders as CSV text chunks (``ORDER_COLUMNS``), oldest first."""
    query = (select(TicketOrder.id, TicketOrder.created_at, TicketOrder.paid_at, TicketOrder.status,
                    TicketOrder.email, TicketType.name, TicketOrder.quantity, TicketOrder.unit_price,
                    DiscountCode.code, TicketOrder.total_amount, TicketOrder.refunded_amount, TicketOrder.currency,
                    TicketOrder.payment_ref)
             .join(TicketType, TicketType.id == TicketOrder.ticket_id)
             .outerjoin(DiscountCode, DiscountCode.id == TicketOrder.discount_code_id)
             .where(TicketOrder.event_id == event_id).order_by(TicketOrder.id))
    return _lines(ORDER_COLUMNS, _streamed(query))


def attendees_csv(event_id):
    """The event's admission tickets as CSV text chunks (``ATTENDEE_COLUMNS``), by order."""
    checker = aliased(User)
    query = (select(Admission.code, TicketOrder.id, TicketOrder.email, TicketType.name, Admission.void,
                    Admission.checked_in_at, checker.email, Admission.attendee_name)
             .join(TicketOrder, TicketOrder.id == Admission.order_id)
             # Each admission's own line says its type (a mixed order has several).
             .outerjoin(OrderItem, OrderItem.id == Admission.order_item_id)
             .join(TicketType, TicketType.id == func.coalesce(OrderItem.ticket_id, TicketOrder.ticket_id))
             .outerjoin(checker, checker.id == Admission.checked_in_by)
             .where(TicketOrder.event_id == event_id).order_by(TicketOrder.id, Admission.id))
    return _lines(ATTENDEE_COLUMNS, ((code, order_id, email, name, "no" if void else "yes", at, by, attendee)
                                     for code, order_id, email, name, void, at, by, attendee in _streamed(query)))
