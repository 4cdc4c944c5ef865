"""``flask --app wsgi shop doctor``: what stands between a Stripe payment and a paid order, one line per check.

The system this replaces had three "common issues" with no way to tell them apart; each
maps to named checks here:

* events not reaching us → ``queue``, ``partner event source``, ``rule``, ``queue policy``, ``delivery …``
* events received but not processed → ``dead-letter queue``, ``unprocessed events``
* ``order_id`` missing from metadata → ``order_id in metadata``

and their symptom, orders left pending, is ``pending past checkout expiry``.
"""
import json
import logging
from dataclasses import dataclass
from datetime import timedelta

from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError
from flask import current_app
from sqlalchemy import func, select, text

from ..extensions import db
from ..models import DeliveryPath, OutcomeReason, PaymentEvent
from ..models.base import utcnow
from ..payments import PaymentRefused, PaymentUnavailable, gateway
from ..services.holds import HOLD_GRACE, pending_past_hold
from ..services.outbox import outbox_counts, undelivered
from ..services.transactions import transaction
from .aws_setup import STRIPE_SOURCE_PREFIX, aws_client, handled_event_types

logger = logging.getLogger(__name__)

OK, WARN, FAIL = "OK", "WARN", "FAIL"
SETUP = "flask --app wsgi shop aws-setup"
# An event is committed within seconds; one still unprocessed after this failed.
UNPROCESSED_AFTER = timedelta(minutes=5)
# The sweeper settles an ended hold within HOLD_GRACE plus a sweep or two; later means it cannot.
SWEEPER_OVERDUE = HOLD_GRACE + timedelta(minutes=5)


@dataclass(frozen=True)
class Check:
    status: str
    name: str
    reason: str
    fix: str = ""

    def line(self):
        """``STATUS name: reason — fix: …`` (the fix only where something is wrong)."""
        line = f"{self.status:<4} {self.name}: {self.reason}"
        return f"{line} — fix: {self.fix}" if self.fix and self.status != OK else line


def run_checks(event_source=None, event_bus=None):
    """Run every check and return them in order; a check that errors is itself a FAIL, never an exception.

    ``event_source`` (``aws.partner/stripe.com/ed_…``) is looked up by name when not given;
    ``event_bus`` defaults to the partner bus, which is named like the source.
    """
    checks = [_guarded("stripe key", _stripe_key), _guarded("webhook secret", _webhook_secret),
              _guarded("database", _database)]
    queue_url = current_app.config["SQS_QUEUE_URL"]
    if queue_url:
        checks += _guarded_many("queue", _eventbridge_checks, queue_url, event_source, event_bus)
    else:
        checks.append(Check(WARN, "queue", "SQS_QUEUE_URL is not set: the EventBridge path is off, payments arrive "
                            "by webhook only", f"{SETUP} --event-source aws.partner/stripe.com/ed_…, then set "
                            "SQS_QUEUE_URL and AWS_REGION"))
    checks += _guarded_many("delivery", _deliveries)
    checks += [_guarded("unprocessed events", _unprocessed_events), _guarded("order_id in metadata", _missing_order_id),
               _guarded("pending past checkout expiry", _pending_past_expiry), _guarded("mail", _mail)]
    return checks


def delivery_health():
    """The delivery checks the console's dashboard shows: when each path last delivered, events received but
    not processed, the dead-letter queue's depth (with a queue configured), orders pending past their hold
    and the mail waiting in the outbox.

    Only the database, and SQS with short timeouts: a page must not wait on the slower AWS checks.
    """
    checks = _guarded_many("delivery", _deliveries)
    checks.append(_guarded("unprocessed events", _unprocessed_events))
    if current_app.config["SQS_QUEUE_URL"]:
        checks.append(_guarded("dead-letter queue", _dead_letter_depth, current_app.config["SQS_QUEUE_URL"]))
    checks.append(_guarded("pending past checkout expiry", _pending_past_expiry))
    checks.append(_guarded("mail", _mail))  # mail waiting in the outbox, and mail given up on
    return checks


def _dead_letter_depth(queue_url):
    sqs = aws_client("sqs", current_app.config["AWS_REGION"],
                     config=BotoConfig(connect_timeout=2, read_timeout=3, retries={"max_attempts": 1}))
    attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])["Attributes"]
    return _dead_letter_queue(sqs, attributes)


def _guarded(name, check, *args):
    return _guarded_many(name, lambda *a: [check(*a)], *args)[0]


def _guarded_many(name, checks, *args):
    try:
        return checks(*args)
    except Exception as exc:  # noqa: BLE001 (doctor reports what is broken; it must not break on it)
        db.session.rollback()
        logger.warning("doctor: check %s failed: %s", name, exc)
        return [Check(FAIL, name, f"could not check: {_error_text(exc)}", "see the reason; the database and AWS "
                      "credentials must be reachable from here")]


def _error_text(exc):
    """One short line: AWS and drivers put whole HTML pages and tracebacks in their messages."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        text = f"{error.get('Code')}: {error.get('Message')}"
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())[:200]


def _count(n, noun):
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


# The event checks need "none or some, and roughly how many": counting stops here, so a table that grows
# for years (events without an order id accumulate) is never read whole.
COUNT_CAP = 1000


def _capped(n, noun):
    return f"at least {n} {noun}s" if n >= COUNT_CAP else _count(n, noun)


def _stripe_key():
    if current_app.config["STRIPE"].sandbox:
        if not current_app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite"):
            return Check(FAIL, "stripe key", "sandbox payments on a real database: anyone can get valid tickets "
                         "without paying", "set STRIPE_SECRET_KEY and remove SHOP_PAYMENTS=sandbox")
        return Check(WARN, "stripe key", "sandbox payments (the embedded default): nothing is charged",
                     "set STRIPE_SECRET_KEY (sk_live_… or sk_test_…) to take real payments")
    try:
        return Check(OK, "stripe key", gateway().check_credentials())
    except (PaymentRefused, PaymentUnavailable) as exc:
        return Check(FAIL, "stripe key", f"Stripe did not accept the key: {exc}",
                     "copy the secret key from Stripe's dashboard (Developers → API keys) into STRIPE_SECRET_KEY; "
                     "a restricted key (rk_…) needs read and write access to Checkout Sessions and Refunds")


def _webhook_secret():
    if current_app.config["STRIPE"].sandbox:
        return Check(OK, "webhook secret", "not needed: sandbox payments receive no webhooks")
    if current_app.config["STRIPE"].webhook_secret:
        return Check(OK, "webhook secret", "STRIPE_WEBHOOK_SECRET is set")
    fix = "copy the endpoint's signing secret (whsec_…) from Stripe's dashboard into STRIPE_WEBHOOK_SECRET"
    if current_app.config["SQS_QUEUE_URL"]:
        return Check(WARN, "webhook secret", "not set: the webhook refuses every event, EventBridge is the only path",
                     fix)
    return Check(FAIL, "webhook secret", "not set and no queue either: no event can reach the shop", fix)


def _database():
    with transaction():
        db.session.execute(text("SELECT 1"))
    heads = set(ScriptDirectory.from_config(current_app.extensions["migrate"].migrate.get_config()).get_heads())
    with db.engine.connect() as conn:
        current = set(MigrationContext.configure(conn).get_current_heads())
    if current != heads:
        return Check(FAIL, "database", f"reachable but at revision {', '.join(sorted(current)) or 'none'}, the code "
                     f"expects {', '.join(sorted(heads))}", "flask --app wsgi db upgrade")
    return Check(OK, "database", f"reachable, migrated to {', '.join(sorted(heads))}")


def _eventbridge_checks(queue_url, event_source, event_bus):
    region = current_app.config["AWS_REGION"]
    sqs, events = aws_client("sqs", region), aws_client("events", region)
    try:
        attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])["Attributes"]
    except (BotoCoreError, ClientError) as exc:
        attributes = None
        checks = [Check(FAIL, "queue", f"events not reaching: {queue_url} cannot be read ({_error_text(exc)})",
                        f"create it with {SETUP}, or correct SQS_QUEUE_URL, AWS_REGION and the AWS credentials")]
    else:
        checks = [Check(OK, "queue", f"{queue_url} reachable, {attributes.get('ApproximateNumberOfMessages', '?')} "
                        f"waiting, {attributes.get('ApproximateNumberOfMessagesNotVisible', '?')} in flight"),
                  _guarded("dead-letter queue", _dead_letter_queue, sqs, attributes)]
    source_check, source = _partner_source(events, event_source)
    checks.append(source_check)
    bus = event_bus or source
    if attributes is not None and bus:
        checks += _guarded_many("rule", _rule_and_policy, events, bus, attributes, source)
    elif attributes is not None:
        checks.append(Check(FAIL, "rule", "no event bus to look on", "pass --event-bus NAME or --event-source NAME"))
    return checks


def _dead_letter_queue(sqs, attributes):
    if "RedrivePolicy" not in attributes:
        return Check(WARN, "dead-letter queue", "none: a message that can never be processed is deleted and lost",
                     f"{SETUP} adds one")
    dlq_arn = json.loads(attributes["RedrivePolicy"])["deadLetterTargetArn"]
    _, _, _, _, account, name = dlq_arn.split(":", 5)
    dlq_url = sqs.get_queue_url(QueueName=name, QueueOwnerAWSAccountId=account)["QueueUrl"]
    count = int(sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["ApproximateNumberOfMessages"])
                ["Attributes"]["ApproximateNumberOfMessages"])
    if count:
        return Check(FAIL, "dead-letter queue",
                     f"events received but not processed: {_count(count, 'message')} in {name}",
                     f"read them (aws sqs receive-message --queue-url {dlq_url}); once the cause is fixed, "
                     f"move them back: aws sqs start-message-move-task --source-arn {dlq_arn}")
    return Check(OK, "dead-letter queue", f"{name} configured, empty")


def _partner_source(events, name):
    """The partner event source's check and name (found by prefix when not given)."""
    try:
        if name is None:
            found = events.list_event_sources(NamePrefix=STRIPE_SOURCE_PREFIX)["EventSources"]
            if not found:
                return Check(FAIL, "partner event source", f"events not reaching: no {STRIPE_SOURCE_PREFIX}/… source "
                             "in this account and region", "add an Amazon EventBridge event destination in Stripe's "
                             "dashboard for this AWS account and region"), None
            source = next((s for s in found if s["State"] == "ACTIVE"), found[0])
        else:
            source = events.describe_event_source(Name=name)
    except events.exceptions.ResourceNotFoundException:
        return Check(FAIL, "partner event source", f"events not reaching: {name} does not exist here",
                     "check the name, account and region of Stripe's EventBridge destination"), None
    except (BotoCoreError, ClientError) as exc:
        return Check(WARN, "partner event source", f"could not be looked up ({_error_text(exc)})",
                     "pass --event-source aws.partner/stripe.com/ed_…"), name
    name, state = source["Name"], source["State"]
    if state == "ACTIVE":
        return Check(OK, "partner event source", f"{name} is ACTIVE"), name
    if state == "PENDING":
        return Check(FAIL, "partner event source", f"events not reaching: {name} is PENDING, not associated with an "
                     "event bus; AWS deletes it 7 days after Stripe created it", f"{SETUP} --event-source {name}"), name
    return Check(FAIL, "partner event source", f"events not reaching: {name} is {state}",
                 f"create a new EventBridge destination in Stripe's dashboard, "
                 f"then {SETUP} --event-source <its name>"), name


def _rule_and_policy(events, bus, attributes, source):
    """The rule on ``bus`` that targets the queue (a working one if any), then the queue policy for it."""
    names = events.list_rule_names_by_target(TargetArn=attributes["QueueArn"], EventBusName=bus)["RuleNames"]
    if not names:
        return [Check(FAIL, "rule", f"events not reaching: no rule on bus {bus} targets the queue",
                      f"{SETUP} --event-bus {bus}")]
    rules = [events.describe_rule(Name=name, EventBusName=bus) for name in names]
    problems = [(_rule_problem(rule, source), rule) for rule in rules]
    problem, rule = next(((p, r) for p, r in problems if p is None), problems[0])
    if problem is None:
        check = Check(OK, "rule", f"{rule['Name']} on {bus} is ENABLED, matches {source or STRIPE_SOURCE_PREFIX} "
                      "by prefix and targets the queue")
    else:
        check = Check(FAIL, "rule", f"events not reaching: {rule['Name']} on {bus} {problem}",
                      f"{SETUP} --event-bus {bus} --rule-name {rule['Name']}")
    return [check, _queue_policy(attributes, rule["Arn"])]


def _rule_problem(rule, source):
    """Why ``rule`` would not deliver Stripe's events, or None."""
    if rule.get("State") != "ENABLED":
        return f"is {rule.get('State')}"
    pattern = json.loads(rule.get("EventPattern") or "{}")
    example = source or f"{STRIPE_SOURCE_PREFIX}/ed_…"
    sources = pattern.get("source")
    if sources is not None and not any(
            s == example
            or (isinstance(s, dict) and isinstance(s.get("prefix"), str) and example.startswith(s["prefix"]))
            for s in sources):
        return (f"matches source {json.dumps(sources)}, but Stripe's events carry {example}: "
                f'match {{"prefix": "{STRIPE_SOURCE_PREFIX}"}}')
    handled = handled_event_types()
    missing = handled - set(pattern.get("detail-type", handled))
    if missing:
        return f"leaves out detail-type {', '.join(sorted(missing))}"
    return None


def _queue_policy(attributes, rule_arn):
    policy = json.loads(attributes.get("Policy") or "{}")
    statements = policy.get("Statement", [])
    for st in statements if isinstance(statements, list) else [statements]:
        principal, actions = json.dumps(st.get("Principal")), st.get("Action")
        actions = actions if isinstance(actions, list) else [actions]
        source_arns = json.dumps(st.get("Condition", {}))
        if (st.get("Effect") == "Allow" and "events.amazonaws.com" in principal
                and {"sqs:SendMessage", "sqs:*", "*"} & set(actions)
                and (rule_arn in source_arns or "Condition" not in st)):
            return Check(OK, "queue policy", f"EventBridge may send from {rule_arn}")
    return Check(FAIL, "queue policy",
                 f"events not reaching: the queue's policy does not let EventBridge send from {rule_arn}",
                 f"{SETUP} sets it")


def _deliveries():
    with transaction():
        paths = {p.name: p for p in db.session.execute(select(DeliveryPath).order_by(DeliveryPath.name)).scalars()}
    expected = {"webhook": bool(current_app.config["STRIPE"].webhook_secret),
                "eventbridge": bool(current_app.config["SQS_QUEUE_URL"])}
    now = utcnow()
    checks = []
    for name in sorted(set(paths) | {n for n, on in expected.items() if on}):
        path = paths.get(name)
        if path is None:
            checks.append(Check(WARN, f"delivery {name}", "no event has come this way yet",
                                "make a test payment; if this stays, look at the FAIL lines above and at the "
                                "destination's event types in Stripe's dashboard"))
        else:
            ago = int((now - path.last_delivered_at).total_seconds() // 60)
            checks.append(Check(OK, f"delivery {name}", f"last event {path.last_delivered_at:%Y-%m-%d %H:%M} UTC "
                                f"({ago} min ago), {path.deliveries} in all"))
    return checks


def _count_and_latest(*conditions):
    """How many stored Stripe events match (counting stops at COUNT_CAP), and the latest of them."""
    matching = select(PaymentEvent).where(*conditions)
    with transaction():
        count = db.session.execute(select(func.count()).select_from(
            select(PaymentEvent.id).where(*conditions).limit(COUNT_CAP).subquery())).scalar_one()
        latest = db.session.execute(matching.order_by(PaymentEvent.received_at.desc()).limit(1)).scalar_one_or_none()
    return count, latest


def _unprocessed_events():
    count, latest = _count_and_latest(PaymentEvent.processed_at.is_(None),
                                      PaymentEvent.received_at < utcnow() - UNPROCESSED_AFTER)
    if not count:
        return Check(OK, "unprocessed events", "every event received was processed")
    return Check(FAIL, "unprocessed events",
                 f"events received but not processed: {_capped(count, 'event')} (latest {latest.id} "
                 f"{latest.type} via {latest.delivered_by}: {(latest.error or 'no error recorded')[:200]})",
                 "a redelivery processes them again; the log has each event id; "
                 "flask --app wsgi shop sweep settles their orders from Stripe")


def _missing_order_id():
    count, latest = _count_and_latest(PaymentEvent.outcome_reason == OutcomeReason.NO_ORDER_ID.value)
    if not count:
        return Check(OK, "order_id in metadata", "no event lacked it")
    return Check(WARN, "order_id in metadata",
                 f"order_id missing from metadata: {_capped(count, 'event')} (latest {latest.id}) "
                 "for Checkout Sessions without metadata.order_id, so no order could be matched",
                 "if these were shop payments, their sessions were not made by this shop's checkout; otherwise "
                 "they belong to another product on the same Stripe account")


def _pending_past_expiry():
    now = utcnow()
    with transaction():
        count, oldest = pending_past_hold(now)
    if not count:
        return Check(OK, "pending past checkout expiry", "no order")
    status = FAIL if oldest < now - SWEEPER_OVERDUE else WARN
    return Check(status, "pending past checkout expiry", f"{_count(count, 'order')} still pending after their checkout "
                 f"expired (oldest at {oldest:%Y-%m-%d %H:%M} UTC): no event or sweep settled them",
                 "fix the FAIL lines above; the server's sweeper (or flask --app wsgi shop sweep) then settles them")


def _mail():
    """The outbox: messages given up on are a FAIL (a buyer has no tickets email); no mail server a WARN."""
    counts = outbox_counts()
    if counts["failed"]:
        latest = undelivered(limit=1, include_waiting=False)[0]
        return Check(FAIL, "mail", f"{_count(counts['failed'], 'message')} given up on (latest {latest.id}, "
                     f"{latest.kind} to {latest.recipient}: {(latest.last_error or '')[:150]}), "
                     f"{counts['waiting']} waiting",
                     "fix the mail server settings (MAIL_SERVER, MAIL_PORT, …), then "
                     "flask --app wsgi shop outbox --retry ID for each (flask --app wsgi shop outbox lists them)")
    if not current_app.config["MAIL_SERVER"]:
        return Check(WARN, "mail", f"MAIL_SERVER is not set: mail is written to the log only "
                     f"({counts['waiting']} waiting)", "set MAIL_SERVER, MAIL_PORT, MAIL_USERNAME, MAIL_PASSWORD and "
                     "MAIL_DEFAULT_SENDER")
    return Check(OK, "mail", f"{current_app.config['MAIL_SERVER']}:{current_app.config['MAIL_PORT']}, "
                 f"{counts['waiting']} waiting, none failed")
