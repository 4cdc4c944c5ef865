"""The outbox and the mail server: each message written with its cause, sent once, retried through an outage,
and visible to an operator when it cannot be sent. The mail server is aiosmtpd on loopback."""
import json
import logging
import threading
import time
import urllib.request

import pytest
from icalendar import Calendar
from sqlalchemy import select, update

from shop.delivery.sqs_poller import fulfil_queue_message
from shop.extensions import db
from shop.models import MessageKind, OutboxMessage, OutboxStatus, TicketOrder
from shop.models.base import utcnow
from shop.ops.background import run_mail_sender
from shop.ops.doctor import FAIL, run_checks
from shop.services.mail import send_order_lookup
from shop.services.outbox import outbox_counts, send_due
from shop.services.transactions import transaction
from tests.support.apps import WEBHOOK_SECRET
from tests.support.aws import Aws


def messages(kind=None):
    db.session.rollback()
    query = select(OutboxMessage).order_by(OutboxMessage.id)
    if kind is not None:
        query = query.where(OutboxMessage.kind == kind.value)
    return db.session.execute(query).scalars().all()


def make_due_now():
    """Time passes: every waiting message is due."""
    db.session.execute(update(OutboxMessage).values(next_attempt_at=utcnow()))
    db.session.commit()


@pytest.fixture
def sender(app):
    """``with sender():`` runs the server's mail sender thread (every second) for the block."""
    class Running:
        def __call__(self):
            stop = threading.Event()
            thread = threading.Thread(target=run_mail_sender, args=(app, stop, 1), daemon=True)

            class Block:
                def __enter__(self):
                    thread.start()

                def __exit__(self, *exc):
                    stop.set()
                    thread.join(10)
                    assert not thread.is_alive()
            return Block()
    return Running()


def test_a_paid_order_sends_exactly_one_confirmation_with_duplicate_events_on_both_paths(
        ctx, client, make, place_order, stripe_server, webhook, mailbox):
    order = place_order(make.ticket(make.event(title="Synth Night")), quantity=2, email="fan@example.com")
    event = stripe_server.complete(order.checkout_ref)

    for _ in range(5):
        # The same event through EventBridge and SQS (the poller has no request: links come from SHOP_BASE_URL),
        # through the webhook, and the buyer reloading the success page.
        fulfil_queue_message(Aws.envelope(event))
        assert webhook.post(event).status_code == 200
        client.get(f"/checkout/success?session_id={order.checkout_ref}")
    for _ in range(3):
        send_due()

    (received,) = mailbox.wait_for(1)
    time.sleep(0.3)
    assert len(mailbox.messages()) == 1
    assert received.recipients == ["fan@example.com"] and received.subject == "Your tickets: Synth Night"
    assert received.message["From"] == "Ticket Shop <tickets@shop.test>"
    order = db.session.get(TicketOrder, order.id, populate_existing=True)
    for admission in order.admissions:
        assert f"http://localhost/tickets/{admission.code}" in received.text
        assert f'href="http://localhost/tickets/{admission.code}"' in received.html
    ((content_type, ics),) = received.attachments().values()
    assert content_type == "text/calendar" and Calendar.from_ical(ics).walk("VEVENT")[0]["summary"] == "Synth Night"
    (row,) = messages()
    assert (row.status, row.attempts, row.order_id) == ("sent", 1, order.id)


def test_with_the_mail_server_down_the_order_is_paid_at_once_and_the_mail_arrives_once_when_it_is_back(
        ctx, make, place_order, stripe_server, webhook, mailbox, sender, reload, wait_until):
    order = place_order(make.ticket(), email="patient@example.com")
    mailbox.stop()
    with sender():
        started = time.monotonic()
        assert webhook.post(stripe_server.complete(order.checkout_ref)).status_code == 200
        assert time.monotonic() - started < 2 and reload(order).status == "paid"

        def retrying():
            """the sender met the closed port and will try again"""
            rows = messages()
            return rows and rows[0].attempts >= 1 and rows[0].status == "waiting"
        wait_until(retrying, timeout=10)
        assert "unreachable" in messages()[0].last_error and reload(order).status == "paid"
        assert mailbox.messages() == []

        mailbox.start()
        (received,) = mailbox.wait_for(1, timeout=15)
        time.sleep(2.5)  # a few more rounds of the sender: nothing more goes out
    assert len(mailbox.messages()) == 1 and received.recipients == ["patient@example.com"]
    (row,) = messages()
    assert row.status == "sent" and row.attempts >= 2 and row.last_error is None


def test_retries_back_off_and_the_last_failure_shows_in_doctor_and_the_cli(app, ctx, make, place_order, stripe_server,
                                                                           webhook, mailbox, monkeypatch):
    monkeypatch.setitem(app.config, "SHOP_MAIL_MAX_ATTEMPTS", 3)
    monkeypatch.setitem(app.config, "SHOP_MAIL_RETRY_SECONDS", 60)
    order = place_order(make.ticket(), email="unlucky@example.com")
    webhook.post(stripe_server.complete(order.checkout_ref))
    mailbox.stop()

    waits = []
    for _ in range(3):
        send_due()
        (row,) = messages()
        waits.append(round((row.next_attempt_at - utcnow()).total_seconds() / 60))
        assert send_due() == {}  # not due again yet
        make_due_now()

    assert waits[:2] == [1, 2]  # 60 s, then twice that
    (row,) = messages()
    assert (row.status, row.attempts) == ("failed", 3) and outbox_counts() == {"waiting": 0, "failed": 1}
    check = next(c for c in run_checks() if c.name == "mail")
    assert check.status == FAIL and "unlucky@example.com" in check.reason and "given up" in check.reason
    listing = app.test_cli_runner().invoke(args=["shop", "outbox", "--failed"])
    assert listing.exit_code == 0 and f"{row.id} failed order_confirmation to unlucky@example.com" in listing.output

    mailbox.start()
    assert app.test_cli_runner().invoke(args=["shop", "outbox", "--retry", str(row.id)]).exit_code == 0
    sent = app.test_cli_runner().invoke(args=["shop", "send-mail"])
    assert sent.exit_code == 0 and "1 sent" in sent.output
    assert len(mailbox.wait_for(1)) == 1 and outbox_counts() == {"waiting": 0, "failed": 0}


def test_a_refused_recipient_fails_at_once_without_retries(ctx, mailbox):
    send_order_lookup("x@example.com")  # no orders: nothing queued
    assert messages() == []
    with transaction():
        db.session.add(OutboxMessage(kind="order_lookup", recipient="gone@refused.test", subject="s", body_text="t",
                                     body_html="<p>t</p>", attachments="[]"))
    send_due()
    (row,) = messages()
    assert row.status == "failed" and row.attempts == 1 and "refused" in row.last_error


def test_two_senders_at_once_never_send_one_message_twice(app, ctx, make, place_order, mailbox):
    for i in range(24):
        place_order(make.ticket(), email=f"buyer{i}@example.com")
        send_order_lookup(f"buyer{i}@example.com")
    barrier = threading.Barrier(4)

    def send():
        with app.app_context():
            barrier.wait()
            while send_due(limit=5):
                pass
            db.session.remove()

    threads = [threading.Thread(target=send) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)

    received = mailbox.wait_for(24)
    time.sleep(0.3)
    assert sorted(r.recipients[0] for r in mailbox.messages()) == sorted(f"buyer{i}@example.com" for i in range(24))
    assert {row.status for row in messages()} == {"sent"} and {row.attempts for row in messages()} == {1}
    assert len(received) == 24


def test_without_a_mail_server_messages_go_to_the_log_and_stay_readable(app, shop_app, make, caplog):
    with shop_app(MAIL_SERVER="") as app, app.app_context():
        ticket = make.ticket()
        with app.test_request_context():
            from shop.services.checkout import CheckoutRequest, ReturnUrls, start_checkout
            start_checkout(CheckoutRequest(event_id=ticket.event_id, ticket_id=ticket.id, quantity=1,
                                           email="reader@example.com"),
                           ReturnUrls(success="http://localhost/s?session_id={CHECKOUT_REF}",
                                      cancel_for=lambda o: "http://localhost/c"))
        send_order_lookup("reader@example.com")
        with caplog.at_level(logging.INFO, logger="shop.services.outbox"):
            assert send_due() == {"logged": 1}
        (row,) = db.session.execute(select(OutboxMessage)).scalars().all()
        assert row.status == OutboxStatus.LOGGED.value and "/orders/lookup/" in row.body_text
        assert "Your orders at the Ticket Shop" in caplog.text and "/orders/lookup/" in caplog.text
        db.session.remove()


def test_a_message_that_cannot_be_built_never_undoes_the_payment(app, ctx, make, place_order, stripe_server,
                                                                 reload, monkeypatch):
    """The embedded default has no SHOP_BASE_URL: a background thread (no request) cannot build links."""
    order = place_order(make.ticket())
    stripe_server.complete(order.checkout_ref)
    monkeypatch.setitem(app.config, "SHOP_BASE_URL", None)

    from shop.services.sweeper import settle_order
    settle_order(order.id, "sweeper")

    assert reload(order).status == "paid"
    (row,) = messages()
    assert row.status == "failed" and row.last_error.startswith("not built")
    assert next(c for c in run_checks() if c.name == "mail").status == FAIL


def test_a_refund_sends_the_notice_that_the_tickets_are_void(ctx, make, place_order, stripe_server, webhook, mailbox,
                                                            reload):
    order = place_order(make.ticket(make.event(title="Cancelled gig")), quantity=2, email="fan@example.com")
    webhook.post(stripe_server.complete(order.checkout_ref))
    refunded = stripe_server.refund(reload(order).payment_ref)
    webhook.post(refunded)
    webhook.post(refunded)
    send_due()
    received = mailbox.wait_for(2)
    assert [m.subject for m in received] == ["Your tickets: Cancelled gig", "Refunded: Cancelled gig"]
    assert "2 tickets are now void" in received[1].text


def test_a_failed_delayed_payment_sends_its_notice(ctx, make, place_order, stripe_server, webhook, mailbox):
    order = place_order(make.ticket(make.event(title="Bank gig")), email="slow@example.com")
    webhook.post(stripe_server.complete(order.checkout_ref, payment_status="unpaid"))
    webhook.post(stripe_server.async_fail(order.checkout_ref))
    send_due()
    (received,) = mailbox.wait_for(1)
    assert received.subject == "Payment failed: Bank gig" and "Nothing was charged" in received.text
    assert [m.kind for m in messages()] == [MessageKind.PAYMENT_FAILED.value]


def test_resend_from_the_cli_queues_the_tickets_again(app, ctx, make, place_order, stripe_server, webhook, mailbox):
    order = place_order(make.ticket(), email="again@example.com")
    runner = app.test_cli_runner()
    refused = runner.invoke(args=["shop", "resend", str(order.id)])
    assert refused.exit_code != 0 and "no valid tickets" in refused.output
    webhook.post(stripe_server.complete(order.checkout_ref))

    result = runner.invoke(args=["shop", "resend", str(order.id)])

    assert result.exit_code == 0 and "again@example.com" in result.output
    send_due()
    assert sorted(m.subject.split(":")[0] for m in mailbox.wait_for(2)) == ["Your tickets", "Your tickets again"]
    assert runner.invoke(args=["shop", "resend", "987654"]).exit_code != 0


@pytest.mark.slow
def test_every_gunicorn_worker_runs_a_sender_and_each_confirmation_goes_out_once(
        app, ctx, gunicorn_shop, make, place_order, stripe_server, mailbox):
    ticket = make.ticket(capacity=100)
    orders = [place_order(ticket, email=f"rush{i}@example.com") for i in range(12)]
    with gunicorn_shop(workers=3) as served:
        for order in orders:
            payload = json.dumps(stripe_server.complete(order.checkout_ref))
            for _ in range(2):  # Stripe delivers some events twice
                request = urllib.request.Request(
                    f"{served.url}/webhooks/stripe", data=payload.encode(), method="POST",
                    headers={"Content-Type": "application/json",
                             "Stripe-Signature": stripe_server.sign(payload, WEBHOOK_SECRET)})
                with urllib.request.urlopen(request, timeout=30) as response:
                    assert response.status == 200
        mailbox.wait_for(12, timeout=20)
        time.sleep(2.5)  # more rounds of every worker's sender: nothing goes out twice
        with open(served.log_path) as log:
            starts = [line for line in log if "background threads started" in line]
    assert sorted(m.recipients[0] for m in mailbox.messages()) == sorted(o.email for o in orders)
    assert len(starts) == 3 and all("shop-mail-sender" in line for line in starts)
    assert {(row.status, row.attempts) for row in messages()} == {("sent", 1)}
