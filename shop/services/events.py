"""The event lifecycle: creating, editing and publishing events, ticket types and discount codes.

One service for the console and the CLI, so every rule holds on both: new events are drafts
until published; a capacity never drops below what is sold plus held (checked under the ticket
type's row lock, which every hold takes too); a discount's use limit never drops below its uses
and live reservations; a price change touches only the ticket type, because every order keeps
the unit price it was sold at. Each change is written to the audit log in its own transaction.
"""
import logging
from datetime import datetime
from decimal import Decimal, InvalidOperation

from flask import current_app
from sqlalchemy import select, true
from sqlalchemy.exc import IntegrityError

from ..config import ConfigError, timezone_name
from ..extensions import db
from ..models import AttendeeNames, DiscountCode, Event, EventStatus, Quota, TicketType
from ..timezones import to_utc
from .audit import CLI, record, snapshot
from .transactions import transaction

logger = logging.getLogger(__name__)

EVENT_FIELDS = ("title", "venue", "description", "starts_at", "timezone", "attendee_names")
TICKET_FIELDS = ("name", "price", "capacity", "on_sale_from", "on_sale_until", "hidden")
QUOTA_FIELDS = ("name", "capacity")
DISCOUNT_FIELDS = ("percent_off", "amount_off", "max_uses", "event_id", "valid_from", "valid_until")
MAX_AMOUNT = Decimal("100000000")
MAX_CAPACITY = 1_000_000


class CatalogError(Exception):
    """A change the rules refuse, or input that makes no sense; ``message`` is for the organizer."""

    def __init__(self, message, field=None):
        super().__init__(message)
        self.message = message
        self.field = field


class NotFound(CatalogError):
    """No such event, ticket type or discount code."""


def parse_when(value, tz_name="UTC"):
    """ISO 8601 → naive UTC; a time without an offset is local to ``tz_name`` (the event's zone). CatalogError
    otherwise."""
    try:
        parsed = datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
    except ValueError:
        raise CatalogError(f"{value!r} is not an ISO 8601 date and time, e.g. 2027-03-01T19:30 or "
                           "2027-03-01T19:30:00+01:00") from None
    return to_utc(parsed, tz_name)


def zone_name(value):
    """An IANA time zone name this machine knows (the default: ``SHOP_TIMEZONE``); CatalogError otherwise."""
    try:
        return timezone_name(value or current_app.config["SHOP_TIMEZONE"], "the time zone")
    except ConfigError as exc:
        raise CatalogError(str(exc), "timezone") from None


def money_value(value, field="price"):
    """A non-negative amount with at most two decimals, as Decimal; CatalogError otherwise."""
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise CatalogError(f"{value!r} is not an amount like 20.00", field) from None
    if not amount.is_finite() or amount < 0 or amount != amount.quantize(Decimal("0.01")) or amount >= MAX_AMOUNT:
        raise CatalogError(f"{value!r} must be a non-negative amount with at most two decimals", field)
    return amount.quantize(Decimal("0.01"))


def _text(value, field, longest, label):
    value = (value or "").strip()
    if not value or len(value) > longest:
        raise CatalogError(f"the {label} must be 1 to {longest} characters", field)
    return value


def _event_values(changes):
    values = {}
    if "title" in changes:
        values["title"] = _text(changes["title"], "title", 200, "title")
    if "venue" in changes:
        values["venue"] = _text(changes["venue"], "venue", 200, "venue")
    if "description" in changes:
        values["description"] = (changes["description"] or "").strip()[:10000]
    if "starts_at" in changes:
        if not isinstance(changes["starts_at"], datetime):
            raise CatalogError("the start must be a date and time", "starts_at")
        values["starts_at"] = changes["starts_at"]
    if "timezone" in changes:
        values["timezone"] = zone_name(changes["timezone"])
    if changes.get("attendee_names") is not None:
        if changes["attendee_names"] not in {n.value for n in AttendeeNames}:
            raise CatalogError("attendee names must be none, optional or required", "attendee_names")
        values["attendee_names"] = changes["attendee_names"]
    return values


def _edit(actor, kind, row, fields, values):
    """Set ``values`` on a locked ``row`` and audit the edit as ``<kind>.edit``, before and after."""
    before = snapshot(row, fields)
    for name, value in values.items():
        setattr(row, name, value)
    record(actor, f"{kind}.edit", kind, row.id, before=before, after=snapshot(row, fields))


def _get(model, row_id, missing):
    row = db.session.get(model, row_id)
    if row is None:
        raise NotFound(missing)
    return row


def get_event(event_id):
    """The event, or NotFound."""
    return _get(Event, event_id, f"There is no event {event_id}.")


def get_ticket_type(ticket_id):
    """The ticket type (its event loads with it on use), or NotFound."""
    return _get(TicketType, ticket_id, f"There is no ticket type {ticket_id}.")


def get_discount(discount_id):
    """The discount code, or NotFound."""
    return _get(DiscountCode, discount_id, f"There is no discount code {discount_id}.")


def get_quota(quota_id):
    """The quota (its event and ticket types load on use), or NotFound."""
    return _get(Quota, quota_id, f"There is no quota {quota_id}.")


def _locked(model, row_id, missing):
    row = db.session.execute(select(model).where(model.id == row_id).with_for_update()
                             .execution_options(populate_existing=True)).scalar_one_or_none()
    if row is None:
        raise NotFound(missing)
    return row


def create_event(*, title, starts_at, venue, description="", timezone=None, publish=False, attendee_names="none",
                 actor=CLI):
    """Create an event, a draft unless ``publish``, shown in ``timezone`` (default ``SHOP_TIMEZONE``); returns it."""
    values = _event_values({"title": title, "venue": venue, "description": description, "starts_at": starts_at,
                            "timezone": timezone, "attendee_names": attendee_names})
    with transaction():
        event = Event(status=(EventStatus.PUBLISHED if publish else EventStatus.DRAFT).value, **values)
        db.session.add(event)
        db.session.flush()
        record(actor, "event.create", "event", event.id, after=snapshot(event, (*EVENT_FIELDS, "status")))
    logger.info("event %s created (%s) by %s", event.id, event.status, actor.label)
    return event


def update_event(event_id, *, actor=CLI, **changes):
    """Change an event's title, venue, description or start; returns it."""
    unknown = set(changes) - set(EVENT_FIELDS)
    if unknown:
        raise CatalogError(f"an event has no field {', '.join(sorted(unknown))}")
    values = _event_values(changes)
    with transaction():
        event = _locked(Event, event_id, f"There is no event {event_id}.")
        _edit(actor, "event", event, EVENT_FIELDS, values)
    return event


def set_event_status(event_id, status, *, actor=CLI):
    """Publish an event (``EventStatus.PUBLISHED``) or take it back to draft; returns it.

    Taking back a published event hides it and stops its sales; orders already paid stay paid.
    """
    status = EventStatus(status)
    with transaction():
        event = _locked(Event, event_id, f"There is no event {event_id}.")
        before = event.status
        event.status = status.value
        if before != status.value:
            action = "event.publish" if status is EventStatus.PUBLISHED else "event.unpublish"
            record(actor, action, "event", event.id, before={"status": before}, after={"status": status.value})
    logger.info("event %s is %s (by %s)", event_id, status.value, actor.label)
    return event


def _check_window(on_sale_from, on_sale_until):
    if on_sale_from and on_sale_until and on_sale_until <= on_sale_from:
        raise CatalogError("sales must close after they open", "on_sale_until")


def _ticket_values(changes):
    values = {}
    if "name" in changes:
        values["name"] = _text(changes["name"], "name", 120, "name")
    if "price" in changes:
        values["price"] = money_value(changes["price"], "price")
    if "capacity" in changes:
        capacity = changes["capacity"]
        if not isinstance(capacity, int) or isinstance(capacity, bool) or not 0 <= capacity <= MAX_CAPACITY:
            raise CatalogError(f"the capacity must be a whole number from 0 to {MAX_CAPACITY}", "capacity")
        values["capacity"] = capacity
    for name in ("on_sale_from", "on_sale_until"):
        if name in changes:
            if changes[name] is not None and not isinstance(changes[name], datetime):
                raise CatalogError("a sales window end must be a date and time", name)
            values[name] = changes[name]
    if "hidden" in changes:
        values["hidden"] = bool(changes["hidden"])
    return values


def add_ticket_type(event_id, *, name, price, capacity, on_sale_from=None, on_sale_until=None, hidden=False,
                    actor=CLI):
    """Add a ticket type to an event; returns it."""
    values = _ticket_values({"name": name, "price": price, "capacity": capacity, "on_sale_from": on_sale_from,
                             "on_sale_until": on_sale_until, "hidden": hidden})
    _check_window(values["on_sale_from"], values["on_sale_until"])
    with transaction():
        get_event(event_id)
        # An event-wide capacity counts every type of the event, later ones too. The new type has sold
        # and held nothing, so the quota's counters stand; its row lock orders this against holds.
        event_wide = db.session.execute(select(Quota).where(Quota.event_id == event_id, Quota.event_wide == true())
                                        .order_by(Quota.id).with_for_update()).scalars().all()
        ticket = TicketType(event_id=event_id, quotas=event_wide, **values)
        db.session.add(ticket)
        db.session.flush()
        record(actor, "ticket_type.create", "ticket_type", ticket.id,
               after={"event_id": event_id, **snapshot(ticket, TICKET_FIELDS)})
    logger.info("ticket type %s added to event %s by %s", ticket.id, event_id, actor.label)
    return ticket


def update_ticket_type(ticket_id, *, actor=CLI, **changes):
    """Change a ticket type; returns it.

    The capacity is checked against sold plus held under the row's lock, which every hold
    takes too, so no checkout can slip in between the check and the change. A new price is
    for new orders only: orders keep their own unit price.
    """
    unknown = set(changes) - set(TICKET_FIELDS)
    if unknown:
        raise CatalogError(f"a ticket type has no field {', '.join(sorted(unknown))}")
    values = _ticket_values(changes)
    with transaction():
        ticket = _locked(TicketType, ticket_id, f"There is no ticket type {ticket_id}.")
        taken = ticket.sold_quantity + ticket.held_quantity
        if values.get("capacity", ticket.capacity) < taken:
            raise CatalogError(f"the capacity cannot be below the {taken} seat(s) sold or held "
                               f"({ticket.sold_quantity} sold, {ticket.held_quantity} held)", "capacity")
        _check_window(values.get("on_sale_from", ticket.on_sale_from),
                      values.get("on_sale_until", ticket.on_sale_until))
        _edit(actor, "ticket_type", ticket, TICKET_FIELDS, values)
    return ticket


def _discount_values(changes):
    values = {}
    if "percent_off" in changes and changes["percent_off"] is not None:
        percent = changes["percent_off"]
        if not isinstance(percent, int) or not 1 <= percent <= 100:
            raise CatalogError("the percentage must be 1 to 100", "percent_off")
        values["percent_off"], values["amount_off"] = percent, None
    elif "amount_off" in changes and changes["amount_off"] is not None:
        values["amount_off"], values["percent_off"] = money_value(changes["amount_off"], "amount_off"), None
    if "max_uses" in changes:
        uses = changes["max_uses"]
        if uses is not None and (not isinstance(uses, int) or uses < 1):
            raise CatalogError("the use limit must be at least 1, or none", "max_uses")
        values["max_uses"] = uses
    for name in ("event_id", "valid_from", "valid_until"):
        if name in changes:
            values[name] = changes[name]
    if values.get("event_id") is not None:
        get_event(values["event_id"])
    if values.get("valid_from") and values.get("valid_until") and values["valid_until"] <= values["valid_from"]:
        raise CatalogError("the code must stop being valid after it starts", "valid_until")
    return values


def create_discount(*, code, percent_off=None, amount_off=None, max_uses=None, event_id=None, valid_from=None,
                    valid_until=None, actor=CLI):
    """Create a discount code (exactly one of ``percent_off`` and ``amount_off``); returns it."""
    normalized = DiscountCode.normalize(code)
    if not normalized or len(normalized) > 64 or not normalized.replace("-", "").replace("_", "").isalnum():
        raise CatalogError("use 1 to 64 letters, digits, - or _", "code")
    if (percent_off is None) == (amount_off is None):
        raise CatalogError("give exactly one of a percentage and an amount off", "percent_off")
    values = _discount_values({"percent_off": percent_off, "amount_off": amount_off, "max_uses": max_uses,
                               "event_id": event_id, "valid_from": valid_from, "valid_until": valid_until})
    try:
        with transaction():
            discount = DiscountCode(code=normalized, **values)
            db.session.add(discount)
            db.session.flush()  # the unique key decides, not a look-up first
            record(actor, "discount.create", "discount", discount.id,
                   after={"code": normalized, **snapshot(discount, DISCOUNT_FIELDS)})
    except IntegrityError:
        raise CatalogError(f"The code {normalized} exists already.", "code") from None
    logger.info("discount %s created by %s", normalized, actor.label)
    return discount


def update_discount(discount_id, *, actor=CLI, **changes):
    """Change a discount code's amount, use limit, event or validity; returns it.

    The use limit is checked against uses and live reservations under the row's lock.
    """
    unknown = set(changes) - set(DISCOUNT_FIELDS)
    if unknown:
        raise CatalogError(f"a discount code has no field {', '.join(sorted(unknown))}")
    values = _discount_values(changes)
    with transaction():
        discount = _locked(DiscountCode, discount_id, f"There is no discount code {discount_id}.")
        taken = discount.used_count + discount.reserved_count
        limit = values.get("max_uses", discount.max_uses)
        if limit is not None and limit < taken:
            raise CatalogError(f"the use limit cannot be below the {taken} use(s) made or reserved", "max_uses")
        _edit(actor, "discount", discount, DISCOUNT_FIELDS, values)
    return discount


def _quota_capacity(value):
    try:
        capacity = int(str(value).strip())
    except ValueError:
        raise CatalogError(f"{value!r} is not a whole number of seats", "capacity") from None
    if not 0 <= capacity <= MAX_CAPACITY:
        raise CatalogError(f"a capacity must be between 0 and {MAX_CAPACITY}", "capacity")
    return capacity


def create_quota(event_id, *, name, capacity, ticket_ids=None, actor=CLI):
    """A limit shared by ``ticket_ids`` (all of the event's types when None: an event-wide capacity); returns it.

    Its counters start from what its types have sold and held, read under those rows' locks (taken
    by id, as every hold does), so no checkout slips in between; a capacity below that is refused.
    """
    name, capacity = _text(name, "name", 120, "quota's name"), _quota_capacity(capacity)
    with transaction():
        event = _get(Event, event_id, f"There is no event {event_id}.")
        query = select(TicketType).where(TicketType.event_id == event.id)
        if ticket_ids is not None:
            query = query.where(TicketType.id.in_(set(ticket_ids)))
        types = db.session.execute(query.order_by(TicketType.id).with_for_update()
                                   .execution_options(populate_existing=True)).scalars().all()
        if not types or (ticket_ids is not None and len(types) != len(set(ticket_ids))):
            raise CatalogError("a quota needs one or more ticket types of this event", "ticket_ids")
        sold, held = sum(t.sold_quantity for t in types), sum(t.held_quantity for t in types)
        if capacity < sold + held:
            raise CatalogError(f"the capacity cannot be below the {sold + held} seat(s) sold or held "
                               f"({sold} sold, {held} held)", "capacity")
        quota = Quota(event_id=event.id, name=name, capacity=capacity, sold_quantity=sold, held_quantity=held,
                      ticket_types=types, event_wide=ticket_ids is None)
        db.session.add(quota)
        db.session.flush()
        record(actor, "quota.create", "quota", quota.id,
               after={"name": name, "capacity": capacity, "ticket_ids": [t.id for t in types]})
    logger.info("quota %s (%s: %s) over ticket types %s created by %s", quota.id, name, capacity,
                [t.id for t in types], actor.label)
    return quota


def update_quota(quota_id, *, actor=CLI, **changes):
    """Rename a quota or change its capacity, never below what is sold plus held (under its row lock)."""
    unknown = set(changes) - set(QUOTA_FIELDS)
    if unknown:
        raise CatalogError(f"a quota has no field {', '.join(sorted(unknown))}")
    values = {}
    if changes.get("name") is not None:
        values["name"] = _text(changes["name"], "name", 120, "quota's name")
    if changes.get("capacity") is not None:
        values["capacity"] = _quota_capacity(changes["capacity"])
    with transaction():
        quota = _locked(Quota, quota_id, f"There is no quota {quota_id}.")
        taken = quota.sold_quantity + quota.held_quantity
        if values.get("capacity", quota.capacity) < taken:
            raise CatalogError(f"the capacity cannot be below the {taken} seat(s) sold or held "
                               f"({quota.sold_quantity} sold, {quota.held_quantity} held)", "capacity")
        _edit(actor, "quota", quota, QUOTA_FIELDS, values)
    return quota
