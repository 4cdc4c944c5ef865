"""``flask --app wsgi shop …``: the organizer's and operator's commands."""
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation

import click
from flask import current_app
from flask.cli import AppGroup
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from .config import ConfigError, timezone_name
from .delivery.sqs_poller import poll_until_signalled
from .extensions import db
from .models import DiscountCode, Event, TicketOrder, TicketType
from .models.base import utcnow
from .ops.aws_setup import DEFAULT_QUEUE, DEFAULT_RULE, AwsSetupError, provision
from .ops.doctor import FAIL, run_checks
from .payments import PaymentRefused, PaymentUnavailable
from .services.mail import TicketsNotSendable, resend_tickets
from .services.outbox import outbox_counts, retry_message, send_due, undelivered
from .services.refunds import RefundNotPossible, refund_order
from .services.sweeper import sweep
from .timezones import to_local, to_utc

shop_cli = AppGroup("shop", help="Organizer and operator commands for the ticket shop.")


def _when(value, tz_name="UTC"):
    """ISO 8601 → naive UTC; a time without an offset is local to ``tz_name``."""
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not an ISO 8601 date and time, e.g. 2027-03-01T19:30 or 2027-03-01T19:30:00+01:00") from None
    return to_utc(parsed, tz_name)


def _zone(value):
    try:
        return timezone_name(value or current_app.config["SHOP_TIMEZONE"], "--timezone")
    except ConfigError as exc:
        raise click.BadParameter(str(exc), param_hint="--timezone") from None


def _money(value):
    try:
        amount = Decimal(value)
    except InvalidOperation:
        raise click.BadParameter(f"{value!r} is not an amount like 20.00") from None
    if (not amount.is_finite() or amount < 0 or amount != amount.quantize(Decimal("0.01"))
            or amount >= Decimal("100000000")):
        raise click.BadParameter(f"{value!r} must be a non-negative amount with at most two decimals")
    return amount


@shop_cli.command("create-event")
@click.option("--title", required=True)
@click.option("--starts-at", required=True,
              help="ISO 8601 local time in --timezone, e.g. 2027-03-01T19:30 (or with an offset: …T19:30:00+01:00)")
@click.option("--venue", required=True)
@click.option("--description", default="")
@click.option("--timezone", "tz_name", help="The event's IANA time zone, e.g. Europe/Berlin (default: SHOP_TIMEZONE)")
def create_event(title, starts_at, venue, description, tz_name):
    """Create an event; its times are shown in its own time zone."""
    if not title.strip() or len(title) > 200:
        raise click.BadParameter("the title must be 1 to 200 characters", param_hint="--title")
    if not venue.strip() or len(venue) > 200:
        raise click.BadParameter("the venue must be 1 to 200 characters", param_hint="--venue")
    zone = _zone(tz_name)
    event = Event(title=title.strip(), starts_at=_when(starts_at, zone), venue=venue.strip(), description=description,
                  timezone=zone)
    db.session.add(event)
    db.session.commit()
    local = to_local(event.starts_at, zone)
    click.echo(f"Created event {event.id}: {event.title} at {event.venue}, {local:%Y-%m-%d %H:%M} {local.tzname()}"
               + ("" if zone == "UTC" else f" ({zone})"))


@shop_cli.command("add-ticket")
@click.argument("event_id", type=int)
@click.option("--name", required=True)
@click.option("--price", required=True, help="e.g. 20.00")
@click.option("--capacity", required=True, type=click.IntRange(min=1))
def add_ticket(event_id, name, price, capacity):
    """Add a ticket type to an event."""
    if db.session.get(Event, event_id) is None:
        raise click.ClickException(f"There is no event {event_id}.")
    if not name.strip() or len(name) > 120:
        raise click.BadParameter("the name must be 1 to 120 characters", param_hint="--name")
    ticket = TicketType(event_id=event_id, name=name.strip(), price=_money(price), capacity=capacity)
    db.session.add(ticket)
    db.session.commit()
    click.echo(f"Added ticket type {ticket.id} to event {event_id}: {ticket.name}, {ticket.price}, "
               f"{capacity} {'seat' if capacity == 1 else 'seats'}")


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
    if event_id is not None and db.session.get(Event, event_id) is None:
        raise click.ClickException(f"There is no event {event_id}.")
    discount = DiscountCode(code=normalized, percent_off=percent_off,
                            amount_off=_money(amount_off) if amount_off is not None else None,
                            max_uses=max_uses, event_id=event_id,
                            valid_from=_when(valid_from, _zone(None)) if valid_from else None,
                            valid_until=_when(valid_until, _zone(None)) if valid_until else None)
    db.session.add(discount)
    try:
        db.session.commit()
    except IntegrityError:  # the unique key decides, not a look-up first
        db.session.rollback()
        raise click.ClickException(f"The code {normalized} exists already.") from None
    click.echo(f"Created discount {discount.code}: {discount.describe()}"
               + (f", at most {max_uses} uses" if max_uses else "")
               + (f", for event {event_id}" if event_id else ""))


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
    """Create a few upcoming demo events with ticket types; running it again adds nothing."""
    existing = set(db.session.execute(select(Event.title)).scalars())
    today = utcnow().replace(hour=19, minute=30, second=0, microsecond=0)
    for title, venue, zone, days, description, tickets in DEMO_EVENTS:
        if title in existing:
            click.echo(f"Demo event exists: {title}")
            continue
        zone = zone or current_app.config["SHOP_TIMEZONE"]
        event = Event(title=title, venue=venue, description=description, timezone=zone,
                      starts_at=to_utc(today + timedelta(days=days), zone))  # 19:30 where it takes place
        event.ticket_types = [TicketType(name=n, price=Decimal(p), capacity=c) for n, p, c in tickets]
        db.session.add(event)
        db.session.commit()
        click.echo(f"Created demo event {event.id}: {title} "
                   f"({len(tickets)} {'ticket type' if len(tickets) == 1 else 'ticket types'})")


@shop_cli.command("refund")
@click.argument("order_id", type=int)
@click.option("--reason", default="refunded by the organizer")
def refund(order_id, reason):
    """Refund a paid order in full through Stripe."""
    try:
        outcome = refund_order(order_id, reason, path="cli")
    except (RefundNotPossible, PaymentRefused, PaymentUnavailable) as exc:
        raise click.ClickException(str(exc)) from None
    order = db.session.get(TicketOrder, order_id)
    click.echo(f"Order {order_id}: refund requested; the order is now {order.status} ({outcome})")


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


@shop_cli.command("sweep")
def sweep_command():
    """Release ended holds and settle pending orders from Stripe (the server also runs this every minute)."""
    try:
        counts = sweep(path="cli")
    except PaymentUnavailable as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(", ".join(f"{n} {outcome}" for outcome, n in counts.items()) or "Nothing to settle.")


@shop_cli.command("attention")
def attention():
    """List the orders that need the organizer's attention, with why."""
    orders = db.session.execute(select(TicketOrder).where(TicketOrder.needs_attention.is_(True))
                                .order_by(TicketOrder.updated_at.desc())).unique().scalars().all()
    for order in orders:
        click.echo(f"order {order.id} ({order.status}, {order.email}, {order.quantity} × {order.ticket.name}, "
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
