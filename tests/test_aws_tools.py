"""``flask shop aws-setup`` and ``flask shop doctor`` against moto over HTTP."""
import json
from datetime import timedelta

import pytest

from shop.extensions import db
from shop.models import PaymentEvent
from shop.models.base import utcnow
from shop.ops.aws_setup import DEFAULT_QUEUE, DEFAULT_RULE, event_pattern
from tests.support.aws import STRIPE_SOURCE

BUS = "stripe-bus"  # moto keeps only the last /-segment of a bus name in rule calls: a plain name here


def aws_setup(app, *args):
    return app.test_cli_runner().invoke(args=["shop", "aws-setup", "--event-bus", BUS, *args])


def resources(aws):
    """Everything aws-setup makes, as AWS describes it (minus timestamps and counters)."""
    def queue(name):
        url = aws.sqs.get_queue_url(QueueName=name)["QueueUrl"]
        attributes = aws.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        return {k: v for k, v in attributes.items() if "Timestamp" not in k and "ApproximateNumber" not in k}
    rule = aws.events.describe_rule(Name=DEFAULT_RULE, EventBusName=BUS)
    rule.pop("ResponseMetadata")
    return {"queue": queue(DEFAULT_QUEUE), "dlq": queue(f"{DEFAULT_QUEUE}-dlq"), "rule": rule,
            "targets": aws.events.list_targets_by_rule(Rule=DEFAULT_RULE, EventBusName=BUS)["Targets"]}


@pytest.fixture
def provisioned(app, aws):
    """A bus, a partner event source, and the path aws-setup builds on them; yields the queue URL."""
    aws.events.create_partner_event_source(Name=STRIPE_SOURCE, Account="123456789012")
    aws.events.create_event_bus(Name=BUS)
    assert aws_setup(app).exit_code == 0
    return aws.sqs.get_queue_url(QueueName=DEFAULT_QUEUE)["QueueUrl"]


@pytest.fixture
def doctor(shop_app, aws):
    """``doctor(queue_url)``: run ``flask shop doctor`` in a shop configured for the queue; (exit code, output)."""
    def run(queue_url):
        with shop_app(aws=aws, queue_url=queue_url) as app, app.app_context():
            # Its own context on top: the CLI runs in the current one, which may be the test's `ctx`.
            result = app.test_cli_runner().invoke(
                args=["shop", "doctor", "--event-source", STRIPE_SOURCE, "--event-bus", BUS])
        return result.exit_code, result.output
    return run


def line(output, name):
    return next(text for text in output.splitlines() if text.split(" ", 1)[1].lstrip().startswith(f"{name}:"))


def test_aws_setup_twice_leaves_identical_resources(app, aws):
    aws.events.create_event_bus(Name=BUS)
    first = aws_setup(app)
    assert first.exit_code == 0, first.output
    before = resources(aws)
    second = aws_setup(app)
    assert second.exit_code == 0, second.output

    assert resources(aws) == before
    assert "created" in first.output and not any(w in second.output for w in ("created", "corrected", ": set"))
    queue_url = aws.sqs.get_queue_url(QueueName=DEFAULT_QUEUE)["QueueUrl"]
    assert f"SQS_QUEUE_URL={queue_url}" in second.output
    assert json.loads(before["rule"]["EventPattern"]) == event_pattern() == {
        "source": [{"prefix": "aws.partner/stripe.com"}], "detail-type": sorted(event_pattern()["detail-type"])}
    assert before["rule"]["State"] == "ENABLED"
    assert json.loads(before["queue"]["RedrivePolicy"])["deadLetterTargetArn"] == before["dlq"]["QueueArn"]
    statement, = json.loads(before["queue"]["Policy"])["Statement"]
    assert statement["Principal"] == {"Service": "events.amazonaws.com"} and statement["Action"] == "sqs:SendMessage"
    assert statement["Condition"] == {"ArnEquals": {"aws:SourceArn": before["rule"]["Arn"]}}
    assert [(t["Id"], t["Arn"]) for t in before["targets"]] == [("shop-sqs-queue", before["queue"]["QueueArn"])]


def test_aws_setup_puts_back_what_was_changed(app, aws, provisioned):
    before = resources(aws)
    aws.events.disable_rule(Name=DEFAULT_RULE, EventBusName=BUS)
    aws.sqs.set_queue_attributes(QueueUrl=provisioned, Attributes={"Policy": ""})
    result = aws_setup(app)
    assert "rule shop-stripe-to-sqs on stripe-bus: corrected" in result.output and "queue policy: set" in result.output
    assert resources(aws) == before


def test_aws_setup_names_a_missing_bus(app, aws):
    result = aws_setup(app)
    assert result.exit_code == 1
    assert "there is no event bus stripe-bus: pass the partner event source with --event-source" in result.output


def test_doctor_passes_on_a_path_set_up_by_aws_setup(provisioned, doctor):
    code, output = doctor(provisioned)
    assert code == 0, output
    assert not [text for text in output.splitlines() if text.startswith("FAIL")]
    for name in ("stripe key", "webhook secret", "database", "queue", "dead-letter queue", "partner event source",
                 "rule", "queue policy", "unprocessed events", "order_id in metadata", "pending past checkout expiry"):
        assert line(output, name).startswith("OK"), line(output, name)
    assert line(output, "delivery eventbridge").startswith("WARN")  # nothing has arrived yet


def test_doctor_reports_a_disabled_rule(aws, provisioned, doctor):
    aws.events.disable_rule(Name=DEFAULT_RULE, EventBusName=BUS)
    code, output = doctor(provisioned)
    assert code == 1
    assert line(output, "rule").startswith(
        "FAIL rule: events not reaching: shop-stripe-to-sqs on stripe-bus is DISABLED")
    assert "fix: flask --app wsgi shop aws-setup --event-bus stripe-bus" in line(output, "rule")


def test_doctor_reports_the_old_systems_exact_source_rule(aws, provisioned, doctor):
    aws.events.put_rule(Name=DEFAULT_RULE, EventBusName=BUS, EventPattern=json.dumps({"source": ["stripe.com"]}))
    code, output = doctor(provisioned)
    assert code == 1
    assert f'matches source ["stripe.com"], but Stripe\'s events carry {STRIPE_SOURCE}' in line(output, "rule")


def test_doctor_reports_a_missing_queue(aws, provisioned, doctor):
    aws.sqs.delete_queue(QueueUrl=provisioned)
    code, output = doctor(provisioned)
    assert code == 1
    assert line(output, "queue").startswith(f"FAIL queue: events not reaching: {provisioned} cannot be read")


def test_doctor_names_events_received_but_not_processed_and_missing_order_ids(
        ctx, aws, provisioned, doctor, place_order, make):
    dlq_url = aws.sqs.get_queue_url(QueueName=f"{DEFAULT_QUEUE}-dlq")["QueueUrl"]
    aws.sqs.send_message(QueueUrl=dlq_url, MessageBody=aws.envelope(None))
    long_ago = utcnow() - timedelta(hours=1)
    db.session.add_all([
        PaymentEvent(id="evt_stuck", type="checkout.session.completed", delivered_by="eventbridge",
                    received_at=long_ago, error="Stripe could not be reached"),
        PaymentEvent(id="evt_foreign", type="checkout.session.completed", delivered_by="webhook", received_at=long_ago,
                    processed_at=long_ago, outcome="ignored: no_order_id", outcome_kind="ignored",
                    outcome_reason="no_order_id"),
    ])
    order = place_order(make.ticket())
    order.hold_expires_at = long_ago
    db.session.commit()

    code, output = doctor(provisioned)

    assert code == 1
    assert line(output, "dead-letter queue").startswith(
        "FAIL dead-letter queue: events received but not processed: 1 message in shop-stripe-events-dlq")
    assert line(output, "unprocessed events").startswith(
        "FAIL unprocessed events: events received but not processed: 1 event (latest evt_stuck")
    assert line(output, "order_id in metadata").startswith(
        "WARN order_id in metadata: order_id missing from metadata: 1 event")
    assert line(output, "pending past checkout expiry").startswith(
        "FAIL pending past checkout expiry: 1 order still pending")
