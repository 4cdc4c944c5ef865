"""Provisioning the EventBridge path: Stripe's partner event source → bus → rule → SQS queue (+ DLQ).

``provision`` creates what is missing and corrects what differs, so running it twice
changes nothing. It encodes the rules the system this replaces got wrong:

* Stripe's events carry ``source: "aws.partner/stripe.com/<destination id>"``, so the rule
  matches the source by *prefix*; a rule on ``"stripe.com"`` matches nothing.
* They arrive on the partner event bus named like the source, which exists only once the
  source is associated with it; AWS deletes a source not associated within 7 days.
* EventBridge may send to the queue only if the queue's policy lets
  ``events.amazonaws.com`` do so; the policy names our rule, so no other rule can.
"""
import json
import logging

import boto3
from botocore.exceptions import BotoCoreError, ClientError

logger = logging.getLogger(__name__)

STRIPE_SOURCE_PREFIX = "aws.partner/stripe.com"
DEFAULT_QUEUE = "shop-stripe-events"
DEFAULT_RULE = "shop-stripe-to-sqs"
TARGET_ID = "shop-sqs-queue"
# Receives before SQS moves a message to the DLQ. The poller's backoff (2, 4, 8 … s) makes
# 10 receives span about 17 minutes, so a short database outage sends nothing there.
MAX_RECEIVE_COUNT = 10
# 14 days, SQS's maximum, on both queues: a message keeps its first enqueue time when it
# moves to the DLQ, so the DLQ must keep messages at least as long as the queue.
RETENTION_SECONDS = "1209600"


class AwsSetupError(Exception):
    """A step failed or a prerequisite is missing; the message says which and what to do."""


def aws_client(service, region, config=None):
    """A boto3 client; credentials and ``AWS_ENDPOINT_URL`` come from boto3's own chain."""
    return boto3.session.Session(region_name=region).client(service, config=config)


def handled_event_types():
    """The Stripe event types the shop acts on (the Stripe provider's dispatch table)."""
    from ..payments.stripe.provider import EVENT_TRIGGERS
    return frozenset(EVENT_TRIGGERS)


def event_pattern():
    """The rule's pattern: Stripe's partner source by prefix, and the event types fulfilment acts on."""
    # The poller checks the source again, on the "/" boundary (``source_allowed``).
    return {"source": [{"prefix": STRIPE_SOURCE_PREFIX}], "detail-type": sorted(handled_event_types())}


def queue_policy(queue_arn, rule_arn):
    """Let EventBridge send to the queue, for our rule only (``aws:SourceArn``)."""
    return {
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "StripeEventsFromEventBridge",
            "Effect": "Allow",
            "Principal": {"Service": "events.amazonaws.com"},
            "Action": "sqs:SendMessage",
            "Resource": queue_arn,
            "Condition": {"ArnEquals": {"aws:SourceArn": rule_arn}},
        }],
    }


def provision(report, *, event_source=None, event_bus=None, queue_name=DEFAULT_QUEUE, rule_name=DEFAULT_RULE,
              region=None):
    """Create or verify every resource of the EventBridge path; returns the queue URL to configure.

    Give the partner event source (``aws.partner/stripe.com/ed_…``; its bus is created and
    associated when missing) or an existing bus. ``report`` receives one line per step.
    Raises :class:`AwsSetupError`.
    """
    if (event_source is None) == (event_bus is None):
        raise AwsSetupError("give either the partner event source (--event-source) or an existing bus (--event-bus)")
    try:
        events, sqs = aws_client("events", region), aws_client("sqs", region)
        if event_source:
            bus = _ensure_partner_bus(events, event_source, report)
        else:
            bus = _existing_bus(events, event_bus, report)
        dlq_url = _ensure_queue(sqs, f"{queue_name}-dlq", {"MessageRetentionPeriod": RETENTION_SECONDS}, report)
        redrive = {"deadLetterTargetArn": _queue_arn(sqs, dlq_url), "maxReceiveCount": MAX_RECEIVE_COUNT}
        queue_url = _ensure_queue(sqs, queue_name, {
            "MessageRetentionPeriod": RETENTION_SECONDS,
            "ReceiveMessageWaitTimeSeconds": "20",
            "RedrivePolicy": json.dumps(redrive),
        }, report)
        queue_arn = _queue_arn(sqs, queue_url)
        rule_arn = _ensure_rule(events, bus, rule_name, report)
        _ensure_queue_policy(sqs, queue_url, queue_policy(queue_arn, rule_arn), report)
        _ensure_target(events, bus, rule_name, queue_arn, report)
    except (BotoCoreError, ClientError) as exc:
        raise AwsSetupError(f"AWS refused a step: {exc}") from exc
    logger.info("aws-setup: bus %s, rule %s, queue %s verified", bus, rule_name, queue_url)
    return queue_url


def _ensure_partner_bus(events, source, report):
    try:
        state = events.describe_event_source(Name=source)["State"]
    except events.exceptions.ResourceNotFoundException:
        raise AwsSetupError(f"there is no partner event source {source} in this account and region: add an "
                            "Amazon EventBridge event destination in Stripe's dashboard first") from None
    if state == "DELETED":
        raise AwsSetupError(f"the partner event source {source} was deleted (not associated within 7 days?): "
                            "create a new EventBridge destination in Stripe's dashboard")
    try:
        events.describe_event_bus(Name=source)
        report(f"event bus {source}: exists, associated with the partner event source ({state})")
    except events.exceptions.ResourceNotFoundException:
        # Creating the bus with the source's name is what associates (activates) the source.
        events.create_event_bus(Name=source, EventSourceName=source)
        report(f"event bus {source}: created, associating the partner event source")
    return source


def _existing_bus(events, bus, report):
    try:
        events.describe_event_bus(Name=bus)
    except events.exceptions.ResourceNotFoundException:
        raise AwsSetupError(f"there is no event bus {bus}: pass the partner event source with --event-source "
                            "to create it") from None
    report(f"event bus {bus}: exists")
    return bus


def _ensure_queue(sqs, name, attributes, report):
    try:
        url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
    except sqs.exceptions.QueueDoesNotExist:
        url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
        report(f"queue {name}: created")
        return url
    current = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    differing = {k: v for k, v in attributes.items() if _canonical(current.get(k)) != _canonical(v)}
    if differing:
        sqs.set_queue_attributes(QueueUrl=url, Attributes=differing)
        report(f"queue {name}: exists; corrected {', '.join(sorted(differing))}")
    else:
        report(f"queue {name}: exists, as configured")
    return url


def _canonical(value):
    """Attribute values compared as AWS stores them: JSON documents by content, numbers as strings."""
    try:
        return json.loads(value, parse_int=str) if value and value.lstrip().startswith("{") else value
    except ValueError:
        return value


def _queue_arn(sqs, url):
    return sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]


def _ensure_rule(events, bus, name, report):
    pattern = event_pattern()
    try:
        rule = events.describe_rule(Name=name, EventBusName=bus)
    except events.exceptions.ResourceNotFoundException:
        rule = None
    if rule and rule.get("State") == "ENABLED" and json.loads(rule.get("EventPattern") or "{}") == pattern:
        report(f"rule {name} on {bus}: exists, enabled, source prefix {STRIPE_SOURCE_PREFIX}")
        return rule["Arn"]
    arn = events.put_rule(Name=name, EventBusName=bus, EventPattern=json.dumps(pattern), State="ENABLED",
                          Description="Stripe's events for the ticket shop, to its SQS queue")["RuleArn"]
    report(f"rule {name} on {bus}: {'corrected (pattern or state differed)' if rule else 'created'}, "
           f"source prefix {STRIPE_SOURCE_PREFIX}, {len(pattern['detail-type'])} event types")
    return arn


def _ensure_queue_policy(sqs, url, policy, report):
    rule_arn = policy["Statement"][0]["Condition"]["ArnEquals"]["aws:SourceArn"]
    current = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["Policy"]).get("Attributes", {}).get("Policy")
    if current and json.loads(current) == policy:
        report(f"queue policy: exists, events.amazonaws.com may send from rule {rule_arn} only")
        return
    # The queue is the shop's own: its policy is replaced, not merged.
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"Policy": json.dumps(policy)})
    report(f"queue policy: set, events.amazonaws.com may send from rule {rule_arn} only")


def _ensure_target(events, bus, rule, queue_arn, report):
    targets = events.list_targets_by_rule(Rule=rule, EventBusName=bus)["Targets"]
    if any(t["Id"] == TARGET_ID and t["Arn"] == queue_arn for t in targets):
        report(f"target of {rule}: exists, the queue")
        return
    events.put_targets(Rule=rule, EventBusName=bus, Targets=[{"Id": TARGET_ID, "Arn": queue_arn}])
    report(f"target of {rule}: set to the queue {queue_arn}")
