"""The EventBridge path: Stripe → EventBridge → SQS → the poller thread → fulfilment, against moto over HTTP."""
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shop.delivery.sqs_poller import Action, Verdict, VisibilityHeartbeat, fulfil_queue_message
from shop.extensions import db
from shop.models import PaymentEvent, TicketOrder, TicketType
from shop.ops import background
from shop.ops.aws_setup import event_pattern, provision
from shop.payments import InvalidPayload
from shop.payments.stripe.provider import EVENT_TRIGGERS, parse_envelope
from tests.support.aws import FIXTURES, STRIPE_SOURCE
from tests.support.db_proxy import DatabaseProxy
from tests.support.gunicorn_server import gunicorn_settings

ROOT = Path(__file__).resolve().parent.parent
GRACEFUL_TIMEOUT = gunicorn_settings("graceful_timeout")["graceful_timeout"]


@pytest.fixture
def order(make, place_order):
    """A pending order for 3 of 50 seats, placed through the checkout service."""
    return place_order(make.ticket(capacity=50, price="15.00"), quantity=3)


def status_of(order):
    db.session.rollback()  # a fresh snapshot: the poller commits from another connection
    return db.session.get(TicketOrder, order.id, populate_existing=True).status


def sold(order):
    db.session.rollback()
    return db.session.get(TicketType, order.ticket_id, populate_existing=True).sold_quantity


@pytest.fixture
def shop_log(caplog):
    """caplog at INFO over the shop's loggers, which the migrations' fileConfig() (run by the app fixture) disabled."""
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("shop."):
            logging.getLogger(name).disabled = False
    caplog.set_level(logging.INFO)
    return caplog


@pytest.mark.slow
def test_put_events_on_the_bus_reaches_the_running_poller_and_pays_the_order(
        ctx, aws, stripe_server, order, shop_app, wait_until):
    aws.events.create_event_bus(Name="stripe-bus")
    queue_url = provision(lambda line: None, event_bus="stripe-bus", queue_name="shop-e2e")
    rule = aws.events.describe_rule(Name="shop-stripe-to-sqs", EventBusName="stripe-bus")
    assert json.loads(rule["EventPattern"])["source"] == [{"prefix": "aws.partner/stripe.com"}]
    targets = aws.events.list_targets_by_rule(Rule="shop-stripe-to-sqs", EventBusName="stripe-bus")["Targets"]
    assert [t["Arn"] for t in targets] == [aws.arn(queue_url)]

    with shop_app(aws=aws, queue_url=queue_url) as server_app:
        threads = background.start(server_app)
        try:
            assert "shop-sqs-poller" in [t.name for t in threads]
            aws.put_stripe_event(stripe_server.complete(order.checkout_ref), bus="stripe-bus")
            wait_until(lambda: status_of(order) == "paid", timeout=10)
        finally:
            assert background.stop(timeout=10)

    assert sold(order) == 3
    assert db.session.query(PaymentEvent).one().delivered_by == "eventbridge"
    assert aws.messages_on(queue_url) == 0


@pytest.mark.slow
def test_the_same_event_by_webhook_and_queue_many_times_at_once_takes_effect_once(
        app, ctx, aws, stripe_server, order, webhook, shop_app, running_poller, wait_until):
    queue_url = aws.queue()
    event = stripe_server.complete(order.checkout_ref)
    answers = []

    def deliver_by_webhook():
        answers.append(webhook.post(event, client=app.test_client()).status_code)

    with shop_app(aws=aws, queue_url=queue_url) as worker_app, \
            running_poller(worker_app), running_poller(worker_app):  # two workers, each with its poller
        webhooks = [threading.Thread(target=deliver_by_webhook) for _ in range(10)]
        aws.sqs.send_message_batch(QueueUrl=queue_url, Entries=[
            {"Id": str(i), "MessageBody": aws.envelope(event)} for i in range(10)])
        for thread in webhooks:
            thread.start()
        for thread in webhooks:
            thread.join()
        wait_until(lambda: aws.messages_on(queue_url) == 0, timeout=15)

    assert answers == [200] * 10
    assert status_of(order) == "paid"
    assert sold(order) == 3
    assert db.session.query(PaymentEvent).count() == 1


@pytest.mark.slow
def test_a_poison_message_is_left_for_the_dead_letter_queue_and_the_next_message_is_processed(
        ctx, aws, stripe_server, shop_log, order, shop_app, running_poller, wait_until):
    queue_url = aws.queue(dead_letter_queue=True)
    poison = aws.sqs.send_message(QueueUrl=queue_url, MessageBody="this is not JSON")["MessageId"]
    aws.sqs.send_message(QueueUrl=queue_url,
                         MessageBody=json.dumps({"source": STRIPE_SOURCE, "detail": {"no": "event"}}))
    aws.sqs.send_message(QueueUrl=queue_url,
                         MessageBody=aws.envelope(stripe_server.complete(order.checkout_ref)))

    with shop_app(aws=aws, queue_url=queue_url) as worker_app, running_poller(worker_app):
        wait_until(lambda: status_of(order) == "paid")
        wait_until(lambda: shop_log.text.count("left for the dead-letter queue") == 2)

    assert f"message {poison}: poison (not JSON" in shop_log.text
    assert aws.messages_on(queue_url) == 2  # hidden now, redriven to the DLQ after maxReceiveCount receives


@pytest.mark.slow
def test_without_a_dead_letter_queue_a_poison_message_is_deleted(
        ctx, aws, shop_log, shop_app, running_poller, wait_until):
    queue_url = aws.queue()
    aws.sqs.send_message(QueueUrl=queue_url, MessageBody="[1, 2, 3]")
    with shop_app(aws=aws, queue_url=queue_url) as worker_app, running_poller(worker_app):
        wait_until(lambda: aws.messages_on(queue_url) == 0)
    assert "deleted, the queue has no dead-letter queue" in shop_log.text


@pytest.mark.slow
def test_an_event_from_a_source_not_accepted_pays_nothing_and_is_deleted(
        ctx, aws, stripe_server, shop_log, order, shop_app, running_poller, wait_until):
    queue_url = aws.queue()
    event = stripe_server.complete(order.checkout_ref)
    aws.sqs.send_message(QueueUrl=queue_url,
                         MessageBody=aws.envelope(event, source="aws.partner/example.com/not-stripe"))
    aws.sqs.send_message(QueueUrl=queue_url, MessageBody=(FIXTURES / "scheduled-event.envelope.json").read_text())

    with shop_app(aws=aws, queue_url=queue_url) as worker_app, running_poller(worker_app):
        wait_until(lambda: aws.messages_on(queue_url) == 0)

    assert "not ours: source 'aws.partner/example.com/not-stripe' is not accepted" in shop_log.text
    assert "not ours: source 'aws.events' is not accepted" in shop_log.text
    assert status_of(order) == "pending"
    assert db.session.query(PaymentEvent).count() == 0


@pytest.mark.slow
def test_an_accepted_source_list_narrower_than_stripe_turns_other_destinations_away(
        ctx, aws, stripe_server, order, shop_app, running_poller, wait_until):
    queue_url = aws.queue()
    aws.sqs.send_message(QueueUrl=queue_url,
                         MessageBody=aws.envelope(stripe_server.complete(order.checkout_ref)))
    only_ours = {"SHOP_EVENTBRIDGE_SOURCES": "aws.partner/stripe.com/ed_live_OurDestination"}
    with shop_app(aws=aws, queue_url=queue_url, **only_ours) as worker_app, running_poller(worker_app):
        wait_until(lambda: aws.messages_on(queue_url) == 0)
    assert status_of(order) == "pending"


@pytest.fixture
def db_proxy(database_url):
    """The session's database behind a proxy: ``db_proxy.url`` reaches it until ``sever()``."""
    proxy = DatabaseProxy(database_url)
    yield proxy
    proxy.close()


@pytest.mark.slow
def test_database_down_while_a_message_is_processed_it_is_redelivered_and_paid_once_back(
        ctx, aws, stripe_server, db_proxy, shop_log, order, shop_app, running_poller, wait_until):
    queue_url = aws.queue(dead_letter_queue=True)
    event = stripe_server.complete(order.checkout_ref)

    with shop_app(aws=aws, queue_url=queue_url, database_url=db_proxy.url) as worker_app, \
            running_poller(worker_app):
        db_proxy.sever()
        aws.sqs.send_message(QueueUrl=queue_url, MessageBody=aws.envelope(event))
        wait_until(lambda: f"event {event['id']} not processed" in shop_log.text)
        assert status_of(order) == "pending" and aws.messages_on(queue_url) == 1
        db_proxy.restore()
        wait_until(lambda: status_of(order) == "paid", timeout=15)
        wait_until(lambda: aws.messages_on(queue_url) == 0)

    assert sold(order) == 3


@pytest.mark.slow
def test_a_database_connection_dropped_while_idle_is_reconnected(
        ctx, aws, stripe_server, db_proxy, shop_log, order, shop_app, running_poller, wait_until, place_order, make):
    queue_url = aws.queue()
    first, second = order, place_order(make.ticket(capacity=50, price="15.00"), quantity=3)

    with shop_app(aws=aws, queue_url=queue_url, database_url=db_proxy.url) as worker_app, \
            running_poller(worker_app):
        aws.sqs.send_message(QueueUrl=queue_url,
                             MessageBody=aws.envelope(stripe_server.complete(first.checkout_ref)))
        wait_until(lambda: status_of(first) == "paid" and aws.messages_on(queue_url) == 0)
        db_proxy.sever()  # what MariaDB's wait_timeout or a restart does to the pooled connection
        db_proxy.restore()
        aws.sqs.send_message(QueueUrl=queue_url,
                             MessageBody=aws.envelope(stripe_server.complete(second.checkout_ref)))
        wait_until(lambda: status_of(second) == "paid")

    assert "not processed" not in shop_log.text  # paid at the first attempt: the pool pinged and reconnected


@pytest.mark.slow
def test_stripe_unreachable_leaves_the_message_for_a_later_delivery(
        ctx, aws, stripe_server, shop_log, order, shop_app, running_poller, wait_until):
    queue_url = aws.queue()
    event = stripe_server.complete(order.checkout_ref)
    stripe_server.fail_next(2, status=503)  # the library's own retry included
    aws.sqs.send_message(QueueUrl=queue_url, MessageBody=aws.envelope(event))

    with shop_app(aws=aws, queue_url=queue_url) as worker_app, running_poller(worker_app):
        wait_until(lambda: status_of(order) == "paid", timeout=15)

    assert f"event {event['id']} not processed" in shop_log.text
    assert sold(order) == 3


@pytest.mark.slow
def test_shutdown_while_idle_in_a_long_poll_ends_within_the_graceful_timeout(app, aws, shop_app):
    queue_url = aws.queue()
    with shop_app(aws=aws, queue_url=queue_url, SHOP_SQS_WAIT_SECONDS="3") as server_app:
        threads = background.start(server_app)
        assert background.start(server_app) == threads  # once per process
        time.sleep(1)  # the poller is now inside its long poll
        started = time.monotonic()
        assert background.stop(timeout=GRACEFUL_TIMEOUT - 5)
        elapsed = time.monotonic() - started
    assert not any(thread.is_alive() for thread in threads)
    assert elapsed < 3 + 1
    assert GRACEFUL_TIMEOUT > 20 + 5  # the longest long poll SQS allows, and time to finish the batch


@pytest.mark.slow
def test_gunicorn_workers_run_the_poller_and_stop_cleanly(
        app, ctx, aws, stripe_server, tmp_path, order, shop_env, wait_until):
    queue_url = aws.queue()
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    env = {**os.environ, **shop_env(aws=aws, queue_url=queue_url, SHOP_SQS_WAIT_SECONDS="2"),
           "PORT": str(port), "WEB_CONCURRENCY": "2"}
    log = tmp_path / "gunicorn.log"
    with log.open("w") as out:
        server = subprocess.Popen([sys.executable, "-m", "gunicorn", "--preload", "wsgi:app"], cwd=ROOT, env=env,
                                  stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: log.read_text().count("SQS poller started in pid") == 2, timeout=20)
        aws.sqs.send_message(QueueUrl=queue_url,
                             MessageBody=aws.envelope(stripe_server.complete(order.checkout_ref)))
        wait_until(lambda: status_of(order) == "paid")
        started = time.monotonic()
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=GRACEFUL_TIMEOUT + 5)
        elapsed = time.monotonic() - started
    finally:
        if server.poll() is None:
            server.kill()
    text = log.read_text()
    poller_pids = set(re.findall(r"SQS poller started in pid (\d+)", text))
    assert len(poller_pids) == 2 and str(server.pid) not in poller_pids  # in each worker, never in the master
    assert set(re.findall(r"SQS poller stopped in pid (\d+)", text)) == poller_pids
    assert server.returncode == 0 and elapsed < GRACEFUL_TIMEOUT


@pytest.mark.slow
def test_the_heartbeat_keeps_a_slow_message_hidden_past_its_visibility_timeout(aws):
    queue_url = aws.queue()
    aws.sqs.send_message(QueueUrl=queue_url, MessageBody="slow")
    messages = aws.sqs.receive_message(QueueUrl=queue_url, VisibilityTimeout=2)["Messages"]
    with VisibilityHeartbeat(aws.sqs, queue_url, messages, visibility=2, every=0.5):
        time.sleep(3)  # longer than the visibility timeout
        assert "Messages" not in aws.sqs.receive_message(QueueUrl=queue_url)


def test_the_rule_pattern_lets_through_every_event_type_fulfilment_handles():
    assert set(event_pattern()["detail-type"]) == set(EVENT_TRIGGERS)


# ----- property tests: arbitrary bodies never raise, never answer 500 -----

texts = st.text(st.characters(exclude_categories=("Cs",)))  # no lone surrogates: they are not valid UTF-8 on the wire
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | texts,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12)
session_like = st.dictionaries(
    st.sampled_from(["id", "object", "status", "payment_status", "metadata", "payment_intent", "amount_total",
                     "currency"]),
    json_values | st.sampled_from(["cs_test_unknown", "complete", "paid", "checkout.session"]))
stripe_like_events = st.fixed_dictionaries(
    {"id": texts.map(lambda s: "evt_" + s[:40]),
     "type": st.sampled_from(sorted(EVENT_TRIGGERS)) | texts,
     "data": st.fixed_dictionaries({"object": session_like})},
    optional={"object": st.just("event") | json_values})
envelopes = st.fixed_dictionaries(
    {"source": st.sampled_from([STRIPE_SOURCE, "stripe.com", "aws.events"]) | texts,
     "detail": stripe_like_events | json_values},
    optional={"detail-type": texts, "version": st.just("0"), "id": st.uuids().map(str)})
bodies = texts | json_values.map(json.dumps) | envelopes.map(json.dumps)
RELAXED = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@RELAXED
@given(body=bodies)
def test_the_envelope_parser_returns_a_stripe_event_or_refuses_the_body(body):
    try:
        event = parse_envelope(body)
    except InvalidPayload:
        return
    assert isinstance(event.id, str) and isinstance(event.type, str)
    assert isinstance(event.payload["data"]["object"], dict)
    assert json.loads(body)["detail-type"] == event.type


@RELAXED
@given(body=bodies)
def test_any_message_body_gets_a_verdict_and_only_accepted_sources_are_fulfilled(app, body):
    with app.app_context():
        try:
            verdict = fulfil_queue_message(body)
        finally:
            db.session.remove()
    assert isinstance(verdict, Verdict) and isinstance(verdict.action, Action)
    if verdict.event_id is not None:  # it reached fulfilment
        assert json.loads(body)["source"].startswith(("aws.partner/stripe.com", "stripe.com"))


@RELAXED
@given(body=bodies | stripe_like_events.map(json.dumps) | st.binary().map(lambda b: b.decode("latin-1")),
       signed=st.booleans())
def test_the_webhook_route_never_answers_500(app, stripe_server, body, signed):
    header = stripe_server.sign(body, "whsec_test_secret") if signed else "t=1,v1=deadbeef"
    answer = app.test_client().post("/webhooks/stripe", data=body.encode(),
                                    content_type="application/json", headers={"Stripe-Signature": header})
    assert answer.status_code in (200, 400, 503)
