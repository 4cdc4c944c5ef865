"""``flask --app wsgi shop …``: the organizer's and operator's commands, calling the same services as the console."""
import re
import sys
import time
import uuid
from datetime import timedelta
from decimal import Decimal

import click
from flask import current_app
from flask.cli import AppGroup
from sqlalchemy import select, true

from .delivery.sqs_poller import poll_until_signalled
from .extensions import db
from .models import DiscountCode, Event, EventStatus, StaffRole, TicketOrder
from .models.base import utcnow
from .ops.aws_setup import DEFAULT_QUEUE, DEFAULT_RULE, AwsSetupError, provision
from .ops.doctor import FAIL, run_checks
from .ops.scale import ScaleError, Volume, fill_scale, prune_event_payloads
from .payments import PaymentRefused, PaymentUnavailable
from .services import events, staff
from .services.mail import TicketsNotSendable, resend_tickets
from .services.outbox import outbox_counts, retry_message, send_due, undelivered
from .services.refunds import RefundNotPossible, refund_order, refund_order_line
from .services.sweeper import resettle, sweep, unsettled_older_than
from .timezones import to_local, to_utc

shop_cli = AppGroup("shop", help="Organizer and operator commands for the ticket shop.")


def _when(value, tz_name=None):
    """ISO 8601 → naive UTC; a time without an offset is local to ``tz_name`` (default: SHOP_TIMEZONE)."""
    try:
        return events.parse_when(value, tz_name or current_app.config["SHOP_TIMEZONE"])
    except events.CatalogError as exc:
        raise click.BadParameter(exc.message) from None


def _money(value):
    try:
        return events.money_value(value)
    except events.CatalogError as exc:
        raise click.BadParameter(exc.message) from None


def _catalog(change, *args, **kwargs):
    """Run a catalogue service; its refusal becomes a one-line error naming the option."""
    try:
        return change(*args, **kwargs)
    except events.NotFound as exc:
        raise click.ClickException(exc.message) from None
    except events.CatalogError as exc:
        if exc.field:
            raise click.BadParameter(exc.message, param_hint=f"--{exc.field.replace('_', '-')}") from None
        raise click.ClickException(exc.message) from None


def _optional_when(value):
    """An option that may be cleared: "" or "none" → None."""
    return None if value.strip().lower() in ("", "none") else _when(value)


@shop_cli.command("create-event")
@click.option("--title", required=True)
@click.option("--starts-at", required=True,
              help="ISO 8601 local time in --timezone, e.g. 2027-03-01T19:30 (or with an offset: …T19:30:00+01:00)")
@click.option("--venue", required=True)
@click.option("--description", default="")
@click.option("--timezone", "tz_name", help="The event's IANA time zone, e.g. Europe/Berlin (default: SHOP_TIMEZONE); "
              "--starts-at without an offset is local to it")
@click.option("--publish", is_flag=True, help="Publish at once (default: a draft, seen only by staff).")
def create_event(title, starts_at, venue, description, tz_name, publish):
    """Create an event, as a draft unless --publish; its times are shown in its own time zone."""
    zone = _catalog(events.zone_name, tz_name)
    event = _catalog(events.create_event, title=title, starts_at=_when(starts_at, zone), venue=venue,
                     description=description, timezone=zone, publish=publish)
    local = to_local(event.starts_at, zone)
    click.echo(f"Created event {event.id}: {event.title} at {event.venue}, {local:%Y-%m-%d %H:%M} {local.tzname()}"
               + ("" if zone == "UTC" else f" ({zone})")
               + ("" if publish else f" (a draft: publish it with flask --app wsgi shop publish-event {event.id})"))


@shop_cli.command("edit-event")
@click.argument("event_id", type=int)
@click.option("--title")
@click.option("--starts-at", help="ISO 8601, e.g. 2027-03-01T19:30:00+01:00")
@click.option("--venue")
@click.option("--description")
@click.option("--attendee-names", type=click.Choice(["none", "optional", "required"]),
              help="Ask for a name on each ticket: not at all, optionally, or required before paying.")
def edit_event(event_id, title, starts_at, venue, description, attendee_names):
    """Change an event's title, start, venue, description or whether tickets carry names."""
    changes = {k: v for k, v in {"title": title, "venue": venue, "description": description,
                                 "attendee_names": attendee_names}.items() if v is not None}
    if starts_at is not None:
        changes["starts_at"] = _when(starts_at, _catalog(events.get_event, event_id).timezone)
    if not changes:
        raise click.UsageError("Give at least one of --title, --starts-at, --venue, --description, --attendee-names.")
    event = _catalog(events.update_event, event_id, **changes)
    click.echo(f"Saved event {event.id}: {event.title} at {event.venue}, {event.starts_at:%Y-%m-%d %H:%M} UTC")


@shop_cli.command("publish-event")
@click.argument("event_id", type=int)
def publish_event(event_id):
    """Publish an event: it becomes public and its ticket types go on sale (within their windows)."""
    event = _catalog(events.set_event_status, event_id, EventStatus.PUBLISHED)
    click.echo(f"Published event {event.id}: {event.title}")


@shop_cli.command("unpublish-event")
@click.argument("event_id", type=int)
def unpublish_event(event_id):
    """Take an event back to draft: hidden from the public and not on sale; paid orders stay paid."""
    event = _catalog(events.set_event_status, event_id, EventStatus.DRAFT)
    click.echo(f"Event {event.id} is a draft again: {event.title}")


@shop_cli.command("add-ticket")
@click.argument("event_id", type=int)
@click.option("--name", required=True)
@click.option("--price", required=True, help="e.g. 20.00")
@click.option("--capacity", required=True, type=click.IntRange(min=1))
@click.option("--on-sale-from", help="ISO 8601; default: on sale as soon as the event is published")
@click.option("--on-sale-until", help="ISO 8601; sales close at the event's start in any case")
@click.option("--hidden", is_flag=True, help="Not shown or sold to the public.")
def add_ticket(event_id, name, price, capacity, on_sale_from, on_sale_until, hidden):
    """Add a ticket type to an event (sales-window times without an offset are local to the event)."""
    zone = _catalog(events.get_event, event_id).timezone
    ticket = _catalog(events.add_ticket_type, event_id, name=name, price=_money(price), capacity=capacity,
                      on_sale_from=_when(on_sale_from, zone) if on_sale_from else None,
                      on_sale_until=_when(on_sale_until, zone) if on_sale_until else None, hidden=hidden)
    click.echo(f"Added ticket type {ticket.id} to event {event_id}: {ticket.name}, {ticket.price}, "
               f"{capacity} {'seat' if capacity == 1 else 'seats'}")


@shop_cli.command("edit-ticket")
@click.argument("ticket_id", type=int)
@click.option("--name")
@click.option("--price", help="for new orders; orders placed keep their price")
@click.option("--capacity", type=click.IntRange(min=0), help="never below what is sold plus held")
@click.option("--on-sale-from", help="ISO 8601, or 'none' to clear")
@click.option("--on-sale-until", help="ISO 8601, or 'none' to clear")
@click.option("--hidden/--visible", default=None)
def edit_ticket(ticket_id, name, price, capacity, on_sale_from, on_sale_until, hidden):
    """Change a ticket type: name, price, capacity, sales window, hidden or visible."""
    changes = {k: v for k, v in {"name": name, "capacity": capacity, "hidden": hidden}.items() if v is not None}
    if price is not None:
        changes["price"] = _money(price)
    for key, value in (("on_sale_from", on_sale_from), ("on_sale_until", on_sale_until)):
        if value is not None:
            changes[key] = _optional_when(value)
    if not changes:
        raise click.UsageError("Give at least one change.")
    ticket = _catalog(events.update_ticket_type, ticket_id, **changes)
    click.echo(f"Saved ticket type {ticket.id}: {ticket.name}, {ticket.price}, {ticket.capacity} seats"
               + (", hidden" if ticket.hidden else ""))


@shop_cli.command("add-quota")
@click.argument("event_id", type=int)
@click.option("--name", required=True, help='e.g. "floor"')
@click.option("--capacity", required=True, type=click.IntRange(min=0))
@click.option("--ticket", "ticket_ids", type=int, multiple=True,
              help="A ticket type it spans (repeat the option); none: all of the event's types, an event-wide capacity")
def add_quota(event_id, name, capacity, ticket_ids):
    """Add a limit shared by several ticket types of an event ("floor: 300" over two types)."""
    quota = _catalog(events.create_quota, event_id, name=name, capacity=capacity,
                     ticket_ids=list(ticket_ids) or None)
    click.echo(f"Added quota {quota.id} to event {event_id}: {quota.name}, {quota.capacity} seats over ticket "
               f"types {', '.join(str(t.id) for t in quota.ticket_types)} ({quota.sold_quantity} sold, "
               f"{quota.held_quantity} held)")


@shop_cli.command("edit-quota")
@click.argument("quota_id", type=int)
@click.option("--name")
@click.option("--capacity", type=click.IntRange(min=0), help="never below what is sold plus held")
def edit_quota(quota_id, name, capacity):
    """Rename a quota or change its capacity."""
    if name is None and capacity is None:
        raise click.UsageError("Give at least one change.")
    quota = _catalog(events.update_quota, quota_id, name=name, capacity=capacity)
    click.echo(f"Saved quota {quota.id}: {quota.name}, {quota.capacity} seats")


@shop_cli.command("create-discount")
@click.argument("code")
@click.option("--percent-off", type=click.IntRange(1, 100))
@click.option("--amount-off")
@click.option("--max-uses", type=click.IntRange(min=1))
@click.option("--event", "event_id", type=int)
@click.option("--valid-from")
@click.option("--valid-until")
def create_discount(code, percent_off, amount_off, max_uses, event_id, valid_from, valid_until):
    """Create a discount code (--percent-off N or --amount-off X)."""
    if (percent_off is None) == (amount_off is None):
        raise click.UsageError("Give exactly one of --percent-off and --amount-off.")
    normalized = DiscountCode.normalize(code)
    if not normalized or len(normalized) > 64 or not normalized.replace("-", "").replace("_", "").isalnum():
        raise click.BadParameter("use 1 to 64 letters, digits, - or _", param_hint="CODE")
    discount = _catalog(events.create_discount, code=normalized, percent_off=percent_off,
                        amount_off=_money(amount_off) if amount_off is not None else None, max_uses=max_uses,
                        event_id=event_id, valid_from=_when(valid_from) if valid_from else None,
                        valid_until=_when(valid_until) if valid_until else None)
    click.echo(f"Created discount {discount.code}: {discount.describe()}"
               + (f", at most {max_uses} uses" if max_uses else "")
               + (f", for event {event_id}" if event_id else ""))


@shop_cli.command("edit-discount")
@click.argument("code")
@click.option("--percent-off", type=click.IntRange(1, 100))
@click.option("--amount-off")
@click.option("--max-uses", type=click.IntRange(min=0), help="0 for no limit; never below the uses made or reserved")
@click.option("--valid-from", help="ISO 8601, or 'none' to clear")
@click.option("--valid-until", help="ISO 8601, or 'none' to clear")
def edit_discount(code, percent_off, amount_off, max_uses, valid_from, valid_until):
    """Change a discount code's amount, use limit or validity."""
    if percent_off is not None and amount_off is not None:
        raise click.UsageError("Give at most one of --percent-off and --amount-off.")
    discount = db.session.execute(select(DiscountCode).where(DiscountCode.code == DiscountCode.normalize(code))
                                  ).scalar_one_or_none()
    if discount is None:
        raise click.ClickException(f"There is no discount code {DiscountCode.normalize(code)}.")
    changes = {"percent_off": percent_off} if percent_off is not None else {}
    if amount_off is not None:
        changes["amount_off"] = _money(amount_off)
    if max_uses is not None:
        changes["max_uses"] = max_uses or None
    for key, value in (("valid_from", valid_from), ("valid_until", valid_until)):
        if value is not None:
            changes[key] = _optional_when(value)
    if not changes:
        raise click.UsageError("Give at least one change.")
    discount = _catalog(events.update_discount, discount.id, **changes)
    click.echo(f"Saved discount {discount.code}: {discount.describe()}"
               + (f", at most {discount.max_uses} uses" if discount.max_uses else ""))


DEMO_EVENTS = [
    ("Night of the Modular Synths", "The Warehouse, Berlin", "Europe/Berlin", 21,
     "Six artists, forty patch cables, one long night.", [("Standing", "25.00", 300), ("Balcony", "45.00", 40)]),
    ("PyCon Lightning Evening", "Community Hall, Leeds", "Europe/London", 35,
     "Five-minute talks on everything Python, with pizza.",
     [("General admission", "10.00", 120), ("Supporter", "30.00", 20)]),
    ("String Quartet at Dawn", "Botanic Garden Glasshouse", None, 50,
     "Haydn and Shostakovich as the sun comes up.", [("Seat", "35.00", 60)]),
]


@shop_cli.command("seed-demo")
def seed_demo():
    """Create a few upcoming, published demo events with ticket types; running it again adds nothing."""
    existing = set(db.session.execute(select(Event.title)).scalars())
    today = utcnow().replace(hour=19, minute=30, second=0, microsecond=0)
    for title, venue, zone, days, description, tickets in DEMO_EVENTS:
        if title in existing:
            click.echo(f"Demo event exists: {title}")
            continue
        zone = zone or current_app.config["SHOP_TIMEZONE"]
        # 19:30 where it takes place
        event = events.create_event(title=title, venue=venue, description=description, timezone=zone,
                                    starts_at=to_utc(today + timedelta(days=days), zone), publish=True)
        for name, price, capacity in tickets:
            events.add_ticket_type(event.id, name=name, price=Decimal(price), capacity=capacity)
        click.echo(f"Created demo event {event.id}: {title} "
                   f"({len(tickets)} {'ticket type' if len(tickets) == 1 else 'ticket types'})")


@shop_cli.command("refund")
@click.argument("order_id", type=int)
@click.option("--reason", default="refunded by the organizer")
@click.option("--amount", help="Refund only this much (e.g. 5.00); the order stays paid and its tickets valid.")
def refund(order_id, reason, amount):
    """Refund a paid order through Stripe, in full or --amount of it."""
    try:
        # Each run is one deliberate request: a partial refund run twice refunds twice, on purpose.
        outcome = refund_order(order_id, reason, path="cli", amount=amount,
                               request_key=uuid.uuid4().hex if amount is not None else None)
    except (RefundNotPossible, PaymentRefused, PaymentUnavailable) as exc:
        raise click.ClickException(str(exc)) from None
    order = db.session.get(TicketOrder, order_id)
    click.echo(f"Order {order_id}: refund requested; the order is now {order.status} ({outcome})")


@shop_cli.command("refund-line")
@click.argument("order_id", type=int)
@click.argument("item_id", type=int)
@click.option("--reason", default="line refunded by the organizer")
def refund_line(order_id, item_id, reason):
    """Refund one line of a paid order (its tickets void, its seats back on sale); the rest stays paid."""
    try:
        outcome = refund_order_line(order_id, item_id, reason, path="cli")
    except (RefundNotPossible, PaymentRefused, PaymentUnavailable) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"Order {order_id}: line {item_id} refunded ({outcome})")


@shop_cli.command("resend")
@click.argument("order_id", type=int)
def resend(order_id):
    """Email a paid order's tickets again (to the address it was bought with)."""
    try:
        message_id = resend_tickets(order_id)
    except TicketsNotSendable as exc:
        raise click.ClickException(str(exc)) from None
    order = db.session.get(TicketOrder, order_id)
    click.echo(f"Order {order_id}: tickets queued for {order.email} (outbox message {message_id})")


@shop_cli.command("outbox")
@click.option("--failed", "failed_only", is_flag=True, help="Only the messages given up on.")
@click.option("--retry", "retry_id", type=int, help="Make a failed message due again now (its id).")
def outbox(failed_only, retry_id):
    """List the mail not sent yet and the mail given up on (with the last error); --retry ID sends one again."""
    if retry_id is not None:
        if not retry_message(retry_id):
            raise click.ClickException(f"Outbox message {retry_id} is not a failed message.")
        click.echo(f"Outbox message {retry_id} will be sent again.")
        return
    counts = outbox_counts()
    click.echo(f"{counts['waiting']} waiting, {counts['failed']} failed")
    for message in undelivered(include_waiting=not failed_only):
        click.echo(f"{message.id} {message.status} {message.kind} to {message.recipient}"
                   f"{f' (order {message.order_id})' if message.order_id else ''}, {message.attempts} attempt(s), "
                   f"created {message.created_at:%Y-%m-%d %H:%M} UTC: {message.last_error or 'no error yet'}")


@shop_cli.command("send-mail")
def send_mail():
    """Send the mail that is due now, as the server's sender thread does (e.g. with SHOP_MAIL_SENDER=off)."""
    total = {}
    for _ in range(1000):  # bounded: a message that fails waits at least a second before it is due again
        counts = send_due()
        if not counts:
            break
        for status, n in counts.items():
            total[status] = total.get(status, 0) + n
    click.echo(", ".join(f"{n} {status}" for status, n in total.items()) or "No mail is due.")


DURATION = re.compile(r"([0-9]{1,6})([smhd])")
DURATION_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def _duration(ctx, param, value):
    if value is None:
        return None
    match = DURATION.fullmatch(value.strip())
    if match is None:
        raise click.BadParameter(f"{value!r} is not a duration like 0s, 15m, 2h or 1d")
    return timedelta(**{DURATION_UNITS[match.group(2)]: int(match.group(1))})


@shop_cli.command("sweep")
@click.option("--older-than", callback=_duration, metavar="DURATION",
              help="Re-read now every pending or processing order older than this (0s, 15m, 2h, 1d), "
                   "e.g. to heal after an outage, instead of the sweeper's schedule.")
def sweep_command(older_than):
    """Release ended holds and settle pending orders from Stripe (the server also runs this every minute)."""
    try:
        counts = sweep(path="cli") if older_than is None else _resweep(older_than)
    except PaymentUnavailable as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(", ".join(f"{n} {outcome}" for outcome, n in counts.items()) or "Nothing to settle.")


def _resweep(older_than):
    order_ids = unsettled_older_than(older_than)
    counts = {}
    with click.progressbar(resettle(order_ids, path="cli"), length=len(order_ids), label="Re-reading orders",
                           file=sys.stderr, show_pos=True) as progress:
        for _, outcome in progress:
            counts[outcome.label] = counts.get(outcome.label, 0) + 1
    return counts


@shop_cli.command("grant-staff")
@click.argument("email")
@click.option("--role", required=True, type=click.Choice([r.value for r in StaffRole]),
              help="admin runs everything in /console; door only checks tickets in.")
def grant_staff(email, role):
    """Make an account staff (creating it, with a password shown once, if there is none)."""
    if "@" not in email or len(email) > 255:
        raise click.BadParameter(f"{email!r} is not an email address", param_hint="EMAIL")
    user, password = staff.grant_staff(email, role)
    click.echo(f"{user.email} is now {role} staff.")
    if password:
        click.echo(f"Created the account with the password {password} : hand it over privately.")


@shop_cli.command("revoke-staff")
@click.argument("email")
def revoke_staff(email):
    """Take an account's staff role; its console sessions and API tokens stop working at once."""
    try:
        user = staff.revoke_staff(email)
    except staff.StaffError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{user.email} is no longer staff; their API tokens are deleted.")


@shop_cli.command("create-api-token")
@click.argument("email")
def create_api_token(email):
    """A bearer token for a staff member's scanner app (POST /console/events/<id>/checkin); shown once."""
    try:
        token = staff.create_api_token(email)
    except staff.StaffError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(token)


@shop_cli.command("attention")
def attention():
    """List the orders that need the organizer's attention, with why."""
    orders = db.session.execute(select(TicketOrder).where(TicketOrder.needs_attention == true())
                                .order_by(TicketOrder.updated_at.desc())).unique().scalars().all()
    for order in orders:
        click.echo(f"order {order.id} ({order.status}, {order.email}, {order.summary}, "
                   f"{order.total_amount} {order.currency.upper()}): {order.attention_reason}")
    if not orders:
        click.echo("No order needs attention.")


@shop_cli.command("poll")
def poll():
    """Drain the SQS queue in the foreground, as the server's poller thread does (Ctrl-C stops it)."""
    if not current_app.config["SQS_QUEUE_URL"]:
        raise click.ClickException("SQS_QUEUE_URL is not set: there is no queue to poll.")
    # SHOP_SQS_POLLER is not consulted: it turns off the poller thread in the web processes,
    # and a separate `shop poll` process is what one runs instead.
    poll_until_signalled(current_app._get_current_object())


@shop_cli.command("aws-setup")
@click.option("--event-source",
              help="Stripe's partner event source, aws.partner/stripe.com/ed_…; its bus is created if missing.")
@click.option("--event-bus", help="An existing event bus to put the rule on, instead of --event-source.")
@click.option("--queue-name", default=DEFAULT_QUEUE, show_default=True, help="The SQS queue; its DLQ is <name>-dlq.")
@click.option("--rule-name", default=DEFAULT_RULE, show_default=True)
@click.option("--region", help="Default: AWS_REGION / AWS_DEFAULT_REGION.")
def aws_setup(event_source, event_bus, queue_name, rule_name, region):
    """Create or verify the EventBridge → SQS path for Stripe's events; running it again changes nothing."""
    try:
        queue_url = provision(click.echo, event_source=event_source, event_bus=event_bus, queue_name=queue_name,
                              rule_name=rule_name, region=region or current_app.config["AWS_REGION"])
    except AwsSetupError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"Done. Configure the shop with SQS_QUEUE_URL={queue_url} (and AWS_REGION), "
               "then check it with: flask --app wsgi shop doctor")


@shop_cli.command("doctor")
@click.option("--event-source",
              help="Stripe's partner event source (default: looked up by its aws.partner/stripe.com prefix).")
@click.option("--event-bus", help="The bus the rule is on (default: the partner event source's bus).")
def doctor(event_source, event_bus):
    """Check every link from Stripe to a paid order, one line each; exits 1 when any check FAILs."""
    checks = run_checks(event_source=event_source, event_bus=event_bus)
    for check in checks:
        click.echo(check.line())
    if any(check.status == FAIL for check in checks):
        raise SystemExit(1)


@shop_cli.command("fill-scale")
@click.option("--events", default=Volume.events, show_default=True, type=click.IntRange(1, 10_000_000))
@click.option("--orders", default=Volume.orders, show_default=True, type=click.IntRange(1, 100_000_000))
@click.option("--admissions-per-order", default=Volume.admissions_per_order, show_default=True,
              type=click.IntRange(1, 10))
@click.option("--stored-events", default=Volume.stored_events, show_default=True, type=click.IntRange(0, 100_000_000))
@click.option("--big-buyer-orders", default=Volume.big_buyer_orders, show_default=True,
              type=click.IntRange(0, 100_000))
def fill_scale_command(events, orders, admissions_per_order, stored_events, big_buyer_orders):
    """Add years of volume (events, orders, admissions, stored events, one big buyer) to a MariaDB database
    of its own, for measuring the shop at scale. Never on a live shop."""
    if big_buyer_orders > orders:
        raise click.BadParameter("cannot exceed --orders", param_hint="--big-buyer-orders")
    volume = Volume(events=events, orders=orders, admissions_per_order=admissions_per_order,
                    stored_events=stored_events, big_buyer_orders=big_buyer_orders)
    started = time.monotonic()
    try:
        added = fill_scale(volume, progress=lambda step: click.echo(f"Adding {step}…", err=True))
    except ScaleError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(", ".join(f"{n} {table}" for table, n in added.items())
               + f" added in {time.monotonic() - started:.0f} s; the big buyer is {volume.big_buyer_email} "
               f"(password {volume.big_buyer_password})")


@shop_cli.command("prune-events")
@click.option("--older-than", callback=_duration, metavar="DURATION", required=True,
              help="Drop the payloads of processed events received longer ago than this (e.g. 90d; at least 4d).")
def prune_events(older_than):
    """Drop old processed events' payloads; their ids stay, so a late redelivery is still a duplicate."""
    try:
        pruned = prune_event_payloads(older_than)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--older-than") from None
    click.echo(f"Dropped the payloads of {pruned} processed events; their ids stay.")
