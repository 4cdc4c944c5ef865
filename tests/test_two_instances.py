"""Two shop instances (two gunicorn masters on two ports, as on two VMs) on one MariaDB, one SQS queue and one Redis.

The tests that need their instances started at a given moment (pollers on, sweepers due together, one of them
stopped) run their own pair and come first; the ones that share a pair for the module come after, so no third
instance's background threads ever take part in the first ones.
"""
import asyncio
import contextlib
import itertools
import json
import random
import re
import signal
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from shop.extensions import db
from shop.models import Admission, AuditEntry, OrderHistory, OutboxMessage, PaymentEvent, TicketOrder
from shop.models.base import utcnow
from shop.services.checkin import checkin_counts
from shop.services.staff import create_api_token
from tests.support.smtp_server import _Keep
from tests.test_rush import pay_all, post_json, sold_and_held

pytestmark = pytest.mark.slow

CAPACITY = 40
BUYERS = 120
STOP_TIMEOUT = 45  # gunicorn's graceful_timeout (30 s) and a margin: a clean stop takes a second or two


# ----- helpers -----

@contextlib.contextmanager
def started_together(*servers):
    """``with started_together(gunicorn_shop(…), gunicorn_shop(…)) as served:`` both instances booted at once, so
    their workers' background threads (first sweep, first mail round) come due at about the same moment."""
    with contextlib.ExitStack() as stack:
        with ThreadPoolExecutor(len(servers)) as pool:
            entering = [pool.submit(server.__enter__) for server in servers]
        for server, future in zip(servers, entering, strict=True):
            if future.exception() is None:
                stack.push(server.__exit__)  # stopped on the way out, even when the other one failed to start
        served = [future.result() for future in entering]
        # As production runs: gunicorn.conf.py's gevent workers, so their pollers, sweepers and mail senders
        # are greenlets here, and the webhook a greenlet per delivery.
        assert all("Using worker: gevent" in log_of(s) for s in served)
        yield served


def log_of(served):
    with open(served.log_path) as f:
        return f.read()


def stop_gracefully(served):
    """SIGTERM to the master, as systemd stops a VM's gunicorn; returns its log once every worker has left
    (their background threads joined), read before the fixture removes the file."""
    served.process.send_signal(signal.SIGTERM)
    served.process.wait(timeout=STOP_TIMEOUT)
    log = log_of(served)
    assert served.process.returncode == 0, log[-3000:]
    return log


def pids(pattern, log):
    return set(re.findall(pattern, log))


def history(order_ids):
    """``Counter((order_id, from_status, to_status))`` of the orders' timelines."""
    db.session.rollback()
    rows = db.session.execute(select(OrderHistory.order_id, OrderHistory.from_status, OrderHistory.to_status)
                              .where(OrderHistory.order_id.in_(order_ids))).all()
    return Counter(tuple(row) for row in rows)


def moves_into(status, transitions):
    """The part of ``history()`` that moved orders into ``status``."""
    return {key: n for key, n in transitions.items() if key[2] == status}


def statuses_of(order_ids):
    db.session.rollback()
    return dict(db.session.execute(select(TicketOrder.id, TicketOrder.status)
                                   .where(TicketOrder.id.in_(order_ids))).all())


def count_status(order_ids, status):
    """How many of the orders have ``status`` now."""
    return list(statuses_of(order_ids).values()).count(status)


def send_to_queue(aws, queue_url, events, copies=1):
    """Each event ``copies`` times on the queue, in envelopes as EventBridge writes them, ten to a batch; the
    copies of a batch follow it at once, so pollers receiving one after the other get the same events together."""
    events = list(events)
    for start in range(0, len(events), 10):
        for _ in range(copies):
            reply = aws.sqs.send_message_batch(QueueUrl=queue_url, Entries=[
                {"Id": str(n), "MessageBody": aws.envelope(event)}
                for n, event in enumerate(events[start:start + 10])])
            assert not reply.get("Failed"), reply


# ----- SQS: competing pollers on both instances -----

SQS_ORDERS = 60
POLLER_STARTED = r"SQS poller started in pid (\d+)"


def assert_events_stored_once(events_by_order):
    """One row per event, processed (by the EventBridge path) into its own order's payment."""
    db.session.rollback()
    rows = {row.id: row for row in db.session.execute(select(PaymentEvent)).scalars()}
    assert set(rows) == {event["id"] for event in events_by_order.values()}
    for order_id, event in events_by_order.items():
        row = rows[event["id"]]
        # processed_by names the delivery path, not the process: it cannot tell the instances apart.
        assert (row.delivered_by, row.processed_by, row.order_id) == ("eventbridge", "eventbridge", order_id)
        assert row.processed_at is not None and row.error is None
        assert (row.outcome_kind, row.outcome_reason, row.outcome) == ("applied", "state_changed", "paid"), row.id


def fulfilments_per_event(logs, events_by_order):
    """``{event id: how many times a process logged it paying its order}`` over every instance's log (the other
    copy of the event is logged as a duplicate, or as finding the order already paid)."""
    return {event["id"]: sum(log.count(f"event {event['id']} {event['type']} via eventbridge: order {order_id} paid")
                             for log in logs)
            for order_id, event in events_by_order.items()}


def test_every_sqs_message_is_processed_once_with_the_pollers_of_both_instances_competing(
        app, ctx, aws, stripe_server, gunicorn_shop, make, place_order, wait_until):
    queue_url = aws.queue(name="shop-two-instances")
    ticket = make.ticket(capacity=SQS_ORDERS)
    refs = {o.id: o.checkout_ref for o in (place_order(ticket, email=f"sqs{i}@example.com")
                                           for i in range(SQS_ORDERS))}
    order_ids = list(refs)
    with started_together(*(gunicorn_shop(workers=2, sqs_poller=True, aws=aws, queue_url=queue_url)
                            for _ in range(2))) as served:
        wait_until(lambda: all(len(pids(POLLER_STARTED, log_of(s))) == 2 for s in served), timeout=30)
        events_by_order = {order_id: stripe_server.complete(ref) for order_id, ref in refs.items()}
        # SQS delivers at least once, and EventBridge may put an event twice: every event comes twice here.
        send_to_queue(aws, queue_url, events_by_order.values(), copies=2)
        wait_until(lambda: count_status(order_ids, "paid") == SQS_ORDERS, timeout=60)
        wait_until(lambda: aws.messages_on(queue_url) == 0, timeout=30)
        logs = [stop_gracefully(s) for s in served]

    # Four pollers (two workers on each instance) competed for the one queue, and all of them stopped cleanly.
    started = [pids(POLLER_STARTED, log) for log in logs]
    assert [len(p) for p in started] == [2, 2] and not started[0] & started[1]
    assert [pids(r"SQS poller stopped in pid (\d+)", log) for log in logs] == started
    assert_events_stored_once(events_by_order)
    per_event = fulfilments_per_event(logs, events_by_order)
    assert Counter(per_event.values()) == {1: SQS_ORDERS}, per_event
    # Which instance took which message is up to SQS: reported, never asserted.
    print("messages fulfilled per instance:",
          [sum(fulfilments_per_event([log], events_by_order).values()) for log in logs],
          "second copies found processed / found the order paid:",
          [(log.count("duplicate, already processed"), len(re.findall(r"eventbridge: order \d+ unchanged: ", log)))
           for log in logs])
    transitions = history(order_ids)
    assert moves_into("paid", transitions) == {(order_id, "pending", "paid"): 1 for order_id in order_ids}
    assert {to for _, _, to in transitions} <= {"pending", "paid"}, transitions
    assert sold_and_held(ticket) == (SQS_ORDERS, 0)
    assert db.session.scalar(select(func.count()).select_from(Admission)
                             .where(Admission.order_id.in_(order_ids))) == SQS_ORDERS


# ----- Sweepers and mail senders on both instances -----

EXPIRING = 20
PAID = 25
SWEEP_SECONDS = 5  # the shortest interval the configuration allows
BACKGROUND_STARTED = r"background threads started in pid (\d+)"


def holds_end_now(order_ids):
    """Their holds ended ten minutes ago (past the grace the sweeper allows)."""
    db.session.execute(update(TicketOrder).where(TicketOrder.id.in_(order_ids))
                       .values(hold_expires_at=utcnow() - timedelta(minutes=10)))
    db.session.commit()


@pytest.fixture
def slow_world(stripe_server, monkeypatch):
    """``slow_world()``: from now on every Stripe call takes 0.15 s and the mail server takes 0.1 s per message,
    so one sweep or one mail round lasts longer than the others' intervals and they all run into each other."""
    async def slow_data(handler, server, session, envelope):
        await asyncio.sleep(0.1)
        return await original(handler, server, session, envelope)

    original = _Keep.handle_DATA

    def slow_down():
        stripe_server.latency = 0.15
        monkeypatch.setattr(_Keep, "handle_DATA", slow_data)  # each new SMTP connection picks it up

    yield slow_down
    stripe_server.latency = 0.0


def test_no_order_is_swept_or_mailed_twice_with_both_instances_sweeping_and_mailing(
        app, ctx, gunicorn_shop, make, place_order, pay, mailbox, slow_world, wait_until):
    expiring_ticket = make.ticket(capacity=EXPIRING)
    expiring = [place_order(expiring_ticket, email=f"late{i}@example.com").id for i in range(EXPIRING)]
    paid_ticket = make.ticket(make.event(title="Both Senders Night"), capacity=PAID)
    paid = [pay(place_order(paid_ticket, email=f"paid{i}@example.com")).id for i in range(PAID)]
    # Their confirmations wait in the outbox, not due yet: every sender must be running when they become due.
    db.session.execute(update(OutboxMessage).values(next_attempt_at=utcnow() + timedelta(hours=1)))
    db.session.commit()

    with started_together(*(gunicorn_shop(workers=2, SHOP_SWEEP_SECONDS=str(SWEEP_SECONDS))
                            for _ in range(2))) as served:
        wait_until(lambda: all(len(pids(BACKGROUND_STARTED, log_of(s))) == 2 for s in served), timeout=30)
        # Now every sweeper (two per instance) finds the ended holds, and every mail sender the due messages;
        # each sweep and each round outlasts the others' intervals, so they overlap.
        slow_world()
        holds_end_now(expiring)
        db.session.execute(update(OutboxMessage).values(next_attempt_at=utcnow()))
        db.session.commit()
        wait_until(lambda: count_status(expiring, "expired") == EXPIRING, timeout=60)
        mailbox.wait_for(PAID, timeout=60)
        # Stopped before counting: a second sender of one message would have delivered it by now.
        logs = [stop_gracefully(s) for s in served]

    print("sweeps per instance:", [re.findall(r"sweep: (.*)", log) for log in logs],
          "mail rounds per instance:", [re.findall(r"mail: (.*)", log) for log in logs])
    transitions = history(expiring)
    assert moves_into("expired", transitions) == {(order_id, "pending", "expired"): 1 for order_id in expiring}
    assert {to for _, _, to in transitions} <= {"pending", "expired"}, transitions
    assert sold_and_held(expiring_ticket) == (0, 0)  # every seat back, once
    assert sold_and_held(paid_ticket) == (PAID, 0)
    received = Counter(recipient for message in mailbox.messages() for recipient in message.recipients)
    assert received == {f"paid{i}@example.com": 1 for i in range(PAID)}
    assert all(m.subject == "Your tickets: Both Senders Night" for m in mailbox.messages())
    outbox = db.session.execute(select(OutboxMessage.order_id, OutboxMessage.status, OutboxMessage.attempts)).all()
    assert sorted(outbox) == [(order_id, "sent", 1) for order_id in sorted(paid)]  # each claimed exactly once


# ----- SIGTERM to one instance in the middle of a rush -----

RUSH_CAPACITY = 60
RUSH_REQUESTS = 150
RUSH_CLIENTS = 8
SIGTERM_AFTER = 40  # answers before the signal: fewer than the seats, so the survivor still has some to sell


def attempt(url, body):
    """``(status, JSON body)``, or ``(None, the error)`` when no HTTP answer came at all."""
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        text = error.read()
        try:
            return error.code, json.loads(text or b"{}")
        except ValueError:
            return error.code, {"error": text[:500].decode(errors="replace")}
    except OSError as exc:  # refused, reset, or closed without an answer (URLError is one too)
        return None, repr(exc)


class SteadyRush:
    """``clients`` buyers in a row of ``total`` checkouts, every other one on the other instance, one seat each.

    ``results`` holds ``(n, instance, sent_after_signal, status, body)``; ``signalled`` is set by the test
    when it has stopped an instance, so each result says whether its request left before or after that.
    """

    def __init__(self, urls, ticket, total, clients):
        self.urls, self.total = urls, total
        self.path = f"/events/{ticket.event_id}/tickets/{ticket.id}/checkout"
        self.numbers, self.lock, self.results = itertools.count(), threading.Lock(), []
        self.signalled = threading.Event()
        self.threads = [threading.Thread(target=self._client) for _ in range(clients)]

    def start(self):
        for thread in self.threads:
            thread.start()
        return self

    def answered(self):
        with self.lock:
            return sum(1 for *_, status, _ in self.results if status is not None)

    def join(self, timeout):
        for thread in self.threads:
            thread.join(timeout)
        assert not any(thread.is_alive() for thread in self.threads), "the rush did not end"

    def _client(self):
        while True:
            with self.lock:
                n = next(self.numbers)
            if n >= self.total:
                return
            after = self.signalled.is_set()
            status, body = attempt(self.urls[n % 2] + self.path, {"quantity": 1, "email": f"term{n}@example.com"})
            with self.lock:
                self.results.append((n, n % 2, after, status, body))


def assert_answers_complete(results):
    """Every request got 201 or 409, or (on the stopped instance only) no HTTP answer at all; never a 5xx."""
    statuses = Counter(status for *_, status, _ in results)
    assert set(statuses) <= {201, 409, None}, statuses
    unanswered = [(n, body) for n, instance, _, status, body in results if status is None]
    assert all(n % 2 == 0 for n, _ in unanswered), unanswered  # the survivor (odd numbers) answered every one
    assert all("Sold out" in body["error"] or "left" in body["error"] for *_, status, body in results
               if status == 409)
    after_on_survivor = [status for _, instance, after, status, _ in results if instance == 1 and after]
    assert after_on_survivor.count(201) >= 1, after_on_survivor  # it kept selling after the other one stopped


def assert_orders_are_the_201s(ticket, results):
    """The orders in the database are exactly the answered 201s, each holding its seat."""
    created = {body["order_id"]: f"term{n}@example.com" for n, _, _, status, body in results if status == 201}
    db.session.rollback()
    orders = db.session.execute(select(TicketOrder.id, TicketOrder.email, TicketOrder.status, TicketOrder.quantity)
                                .where(TicketOrder.ticket_id == ticket.id)).all()
    assert {order_id: email for order_id, email, _, _ in orders} == created  # none made without its answer
    assert {(status, quantity) for _, _, status, quantity in orders} == {("pending", 1)}
    assert sold_and_held(ticket) == (0, len(created))
    assert len(created) == RUSH_CAPACITY  # the survivor sold what was left: nothing lost, nothing oversold


def test_sigterm_to_one_instance_mid_rush_loses_no_order_and_the_other_keeps_selling(
        app, ctx, gunicorn_shop, stripe_server, make, wait_until):
    ticket = make.ticket(capacity=RUSH_CAPACITY)
    with started_together(gunicorn_shop(workers=2), gunicorn_shop(workers=2)) as (doomed, survivor):
        rush = SteadyRush([doomed.url, survivor.url], ticket, RUSH_REQUESTS, RUSH_CLIENTS).start()
        wait_until(lambda: rush.answered() >= SIGTERM_AFTER, timeout=60)
        doomed.process.send_signal(signal.SIGTERM)
        rush.signalled.set()
        started = time.monotonic()
        rush.join(timeout=120)
        doomed.process.wait(timeout=STOP_TIMEOUT)
        assert doomed.process.returncode == 0 and time.monotonic() - started < STOP_TIMEOUT
        results = rush.results

        assert len(results) == RUSH_REQUESTS
        print("answers (instance, after the signal, status):",
              Counter((instance, after, status) for _, instance, after, status, _ in results),
              Counter(body.split("(")[0] for *_, status, body in results if status is None))
        assert_answers_complete(results)
        assert_orders_are_the_201s(ticket, results)

        pay_all(survivor.url, stripe_server, [(1, status, body) for *_, status, body in results])
        assert sold_and_held(ticket) == (RUSH_CAPACITY, 0)
        assert count_status([body["order_id"] for *_, status, body in results if status == 201], "paid") \
            == RUSH_CAPACITY


# ----- a pair shared by the module's remaining tests -----

@pytest.fixture(scope="module")
def two_servers(app, gunicorn_shop):
    """Two instances with 2 workers each on the session's database."""
    with gunicorn_shop(workers=2) as first, gunicorn_shop(workers=2) as second:
        yield first.url, second.url


def split_rush(urls, ticket, buyers):
    """One checkout per buyer, every other one on the other instance, all released at once; returns statuses."""
    barrier = threading.Barrier(buyers)
    results = []
    path = f"/events/{ticket.event_id}/tickets/{ticket.id}/checkout"

    def buy(i):
        barrier.wait()
        status, body = post_json(urls[i % 2] + path, {"quantity": 1, "email": f"split{i}@example.com"})
        results.append((1, status, body))

    threads = [threading.Thread(target=buy, args=(i,)) for i in range(buyers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_a_rush_split_across_two_instances_sells_exactly_the_capacity(ctx, two_servers, stripe_server, make):
    ticket = make.ticket(capacity=CAPACITY)
    results = split_rush(two_servers, ticket, BUYERS)
    statuses = [status for _, status, _ in results]
    assert statuses.count(201) == CAPACITY and statuses.count(409) == BUYERS - CAPACITY, statuses
    assert sold_and_held(ticket) == (0, CAPACITY)  # also ends this test's read, so it sees the new orders
    # Payments come back through either instance's webhook.
    pay_all(two_servers[0], stripe_server, results[::2])
    pay_all(two_servers[1], stripe_server, results[1::2])
    assert sold_and_held(ticket) == (CAPACITY, 0)


# ----- The door: one ticket scanned at once on both instances -----

SCANS = 20
DEVICES = 4


def scan_everywhere(urls, event_id, code, tokens):
    """``SCANS`` scanner apps (bearer tokens, as scanners sign in) post the code at once, alternating instances;
    returns ``[(instance, status, body)]``."""
    barrier, answers, lock = threading.Barrier(SCANS), [], threading.Lock()

    def device(i):
        request = urllib.request.Request(
            f"{urls[i % 2]}/console/events/{event_id}/checkin", data=json.dumps({"code": code}).encode(),
            method="POST", headers={"Content-Type": "application/json",
                                    "Authorization": f"Bearer {tokens[i % len(tokens)]}"})
        barrier.wait()
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                answer = (i % 2, response.status, json.loads(response.read()))
        except urllib.error.HTTPError as error:
            answer = (i % 2, error.code, json.loads(error.read()))
        with lock:
            answers.append(answer)

    threads = [threading.Thread(target=device, args=(i,)) for i in range(SCANS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(90)
    return answers


def test_one_ticket_scanned_at_once_on_both_instances_is_admitted_once(ctx, two_servers, make, place_order, pay):
    ticket = make.ticket(make.event(title="Two Doors Night"), name="Floor")
    order = pay(place_order(ticket, quantity=1))
    code, event_id = order.admissions[0].code, ticket.event_id
    staff = [make.user(email=f"door{n}@example.com", role="door") for n in range(DEVICES)]
    tokens = [create_api_token(user.email) for user in staff]

    answers = scan_everywhere(two_servers, event_id, code, tokens)

    assert len(answers) == SCANS and Counter(instance for instance, _, _ in answers) == {0: SCANS // 2, 1: SCANS // 2}
    admitted = [body for _, status, body in answers if status == 200]
    refused = [body for _, status, body in answers if status != 200]
    assert len(admitted) == 1 and admitted[0]["result"] == "ok", answers
    assert {(status, body["result"]) for _, status, body in answers if status != 200} == {
        (409, "already_checked_in")}, answers
    db.session.rollback()
    admission = db.session.get(Admission, order.admissions[0].id, populate_existing=True)
    winner = db.session.get(type(staff[0]), admission.checked_in_by).email
    assert {body["checked_in_by"] for body in refused} == {winner} == {admitted[0]["checked_in_by"]}
    assert {body["checked_in_at"] for body in refused} == {admitted[0]["checked_in_at"]}
    assert checkin_counts(event_id) == (1, 1)
    assert db.session.scalar(select(func.count()).select_from(AuditEntry).where(
        AuditEntry.action == "checkin", AuditEntry.target_id == str(order.id))) == 1


# ----- shared rate limits -----

def test_rate_limits_are_counted_across_instances_in_one_redis(ctx, gunicorn_shop, make):
    # A limit of its own, so counts left in Redis by other runs never meet this one.
    limit = f"3 per {random.randint(100, 999)} minutes"
    settings = {"RATELIMIT_ENABLED": "true", "RATELIMIT_STORAGE_URI": "redis://127.0.0.1:6379/5",
                "SHOP_LIMIT_CHECKOUT": limit}
    ticket = make.ticket(capacity=100)
    path = f"/events/{ticket.event_id}/tickets/{ticket.id}/checkout"
    with gunicorn_shop(workers=1, **settings) as first, gunicorn_shop(workers=1, **settings) as second:
        statuses = [post_json(url + path, {"quantity": 1, "email": f"limited{i}@example.com"})[0]
                    for i, url in enumerate([first.url, second.url, first.url, second.url])]
    assert statuses == [201, 201, 201, 429]
