"""The fake Stripe server behaves like Stripe for the calls the shop makes, through the real `stripe` library."""

import http.client
import json
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import stripe

from tests.support.stripe_server import FakeStripe

API_KEY = "sk_test_fake"
WEBHOOK_SECRET = "whsec_test_secret"


class _WebhookInbox(BaseHTTPRequestHandler):
    """Stands in for the shop's webhook route: keeps each (body, Stripe-Signature) and answers 200."""

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"])).decode()
        self.server.received.append((body, self.headers["Stripe-Signature"]))
        self.send_response(200)
        self.end_headers()

    def log_message(self, format, *args):
        """Quiet."""


@pytest.fixture(scope="module")
def inbox():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _WebhookInbox)
    server.received = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def fake(inbox):
    server = FakeStripe(API_KEY, webhook_url=f"http://127.0.0.1:{inbox.server_port}/webhook",
                        webhook_secret=WEBHOOK_SECRET).start()
    yield server
    server.stop()


@pytest.fixture
def stripe_client(fake):
    return stripe.StripeClient(API_KEY, base_addresses={"api": fake.url}, max_network_retries=0)


def create_session(stripe_client, **overrides):
    """A two-ticket order for 2 x 20.00 EUR plus a 5.00 EUR fee, as the shop would create it."""
    params = {
        "mode": "payment",
        "success_url": "https://shop.test/paid?session_id={CHECKOUT_SESSION_ID}",
        "cancel_url": "https://shop.test/cart",
        "line_items": [
            {"price_data": {"currency": "eur", "unit_amount": 2000, "product_data": {"name": "Concert ticket"}},
             "quantity": 2},
            {"price_data": {"currency": "eur", "unit_amount": 500, "product_data": {"name": "Booking fee"}},
             "quantity": 1},
        ],
        "metadata": {"order_id": "5"},
        "client_reference_id": "order-5",
        "customer_email": "ada@example.com",
        "payment_intent_data": {"metadata": {"order_id": "5"}},
        **overrides,
    }
    return stripe_client.v1.checkout.sessions.create(params=params)


def paid_intent(fake, stripe_client):
    """A completed, paid checkout; returns its PaymentIntent id."""
    session = create_session(stripe_client)
    return fake.complete(session.id)["data"]["object"]["payment_intent"]


def test_created_session_round_trips_amount_and_metadata(fake, stripe_client):
    created = create_session(stripe_client)
    session = stripe_client.v1.checkout.sessions.retrieve(created.id)

    assert session.id.startswith("cs_test_")
    assert (session.object, session.status, session.payment_status) == ("checkout.session", "open", "unpaid")
    assert session.amount_subtotal == session.amount_total == 4500
    assert session.currency == "eur"
    assert session.metadata.to_dict() == {"order_id": "5"}
    assert session.client_reference_id == "order-5"
    assert session.customer_email == "ada@example.com"
    assert session.payment_intent is None
    assert session.url == f"{fake.url}/c/pay/{created.id}"
    assert session.expires_at - session.created == 24 * 60 * 60


def test_sessions_list_newest_first_one_page_at_a_time(stripe_client):
    older, newer = create_session(stripe_client), create_session(stripe_client)

    page = stripe_client.v1.checkout.sessions.list(params={"limit": 1})

    assert [session.id for session in page.data] == [newer.id]
    assert page.has_more is True
    assert older.id != newer.id


def test_request_log_keeps_the_nested_params_and_idempotency_key(fake, stripe_client):
    stripe_client.v1.checkout.sessions.create(
        params={"mode": "payment", "success_url": "https://shop.test/ok",
                "line_items": [{"price_data": {"currency": "eur", "unit_amount": 100,
                                               "product_data": {"name": "Ticket"}}, "quantity": 1}],
                "payment_intent_data": {"metadata": {"order_id": "7"}}},
        options={"idempotency_key": "order-7-checkout"},
    )
    method, path, params, headers = fake.requests[-1]

    assert (method, path) == ("POST", "/v1/checkout/sessions")
    assert headers["Idempotency-Key"] == "order-7-checkout"
    assert params["payment_intent_data"] == {"metadata": {"order_id": "7"}}
    assert params["line_items"][0]["price_data"]["unit_amount"] == "100"  # as sent: a string on the wire


def test_same_idempotency_key_replays_the_first_session(fake, stripe_client):
    first = create_session(stripe_client, metadata={"order_id": "8"})
    params = {"mode": "payment", "success_url": "https://shop.test/ok", "metadata": {"order_id": "8"},
              "line_items": [{"price_data": {"currency": "eur", "unit_amount": 900,
                                             "product_data": {"name": "Ticket"}}, "quantity": 1}]}
    original = stripe_client.v1.checkout.sessions.create(params=params, options={"idempotency_key": "order-8"})
    count = len(fake.sessions)

    replay = stripe_client.v1.checkout.sessions.create(params=params, options={"idempotency_key": "order-8"})

    assert replay.id == original.id != first.id
    assert len(fake.sessions) == count
    assert replay.last_response.headers["Idempotent-Replayed"] == "true"


def test_same_idempotency_key_with_other_params_is_refused(stripe_client):
    params = {"mode": "payment", "success_url": "https://shop.test/ok",
              "line_items": [{"price_data": {"currency": "eur", "unit_amount": 900,
                                             "product_data": {"name": "Ticket"}}, "quantity": 1}]}
    stripe_client.v1.checkout.sessions.create(params=params, options={"idempotency_key": "order-9"})
    params["line_items"][0]["quantity"] = 2

    with pytest.raises(stripe.IdempotencyError) as refused:
        stripe_client.v1.checkout.sessions.create(params=params, options={"idempotency_key": "order-9"})

    assert refused.value.http_status == 400
    assert "same parameters" in refused.value.user_message


@pytest.mark.parametrize("lifetime", [10 * 60, 29 * 60, 25 * 60 * 60])
def test_expires_at_outside_stripes_window_is_refused(stripe_client, lifetime):
    with pytest.raises(stripe.InvalidRequestError) as refused:
        create_session(stripe_client, expires_at=int(time.time()) + lifetime)

    assert refused.value.param == "expires_at"
    assert refused.value.http_status == 400


def test_expires_at_inside_the_window_is_kept(stripe_client):
    expires_at = int(time.time()) + 45 * 60

    assert create_session(stripe_client, expires_at=expires_at).expires_at == expires_at


def test_missing_line_item_field_is_refused_with_its_path(stripe_client):
    with pytest.raises(stripe.InvalidRequestError) as refused:
        create_session(stripe_client, line_items=[{"price_data": {"currency": "eur", "product_data": {"name": "T"}},
                                            "quantity": 1}])

    assert refused.value.param == "line_items[0][price_data][unit_amount]"
    assert refused.value.code == "parameter_missing"


def test_completing_pays_the_session_and_expand_returns_the_objects(fake, stripe_client):
    session = create_session(stripe_client)

    event = fake.complete(session.id)
    paid = stripe_client.v1.checkout.sessions.retrieve(
        session.id, params={"expand": ["payment_intent.latest_charge"]})

    assert event["type"] == "checkout.session.completed"
    assert event["data"]["object"]["status"] == "complete"
    assert (paid.status, paid.payment_status, paid.url) == ("complete", "paid", None)
    assert paid.customer_details.email == "ada@example.com"
    intent = paid.payment_intent
    assert (intent.object, intent.status, intent.amount_received) == ("payment_intent", "succeeded", 4500)
    assert intent.metadata.to_dict() == {"order_id": "5"}
    assert (intent.latest_charge.object, intent.latest_charge.amount) == ("charge", 4500)
    assert intent.latest_charge.payment_intent == intent.id


def test_expanding_through_a_null_field_leaves_it_null(stripe_client):
    session = create_session(stripe_client)

    shown = stripe_client.v1.checkout.sessions.retrieve(
        session.id, params={"expand": ["payment_intent", "payment_intent.latest_charge"]})

    assert shown.payment_intent is None


def test_payment_intent_expands_its_latest_charge(fake, stripe_client):
    intent_id = paid_intent(fake, stripe_client)

    plain = stripe_client.v1.payment_intents.retrieve(intent_id)
    expanded = stripe_client.v1.payment_intents.retrieve(intent_id, params={"expand": ["latest_charge"]})

    assert isinstance(plain.latest_charge, str)
    assert expanded.latest_charge.id == plain.latest_charge
    assert stripe_client.v1.charges.retrieve(plain.latest_charge).paid is True


def test_unexpandable_field_is_refused(fake, stripe_client):
    with pytest.raises(stripe.InvalidRequestError) as refused:
        stripe_client.v1.checkout.sessions.retrieve(create_session(stripe_client).id, params={"expand": ["metadata"]})

    assert refused.value.param == "expand"


def test_delayed_payment_waits_for_async_success(fake, stripe_client):
    session = create_session(stripe_client)

    fake.complete(session.id, payment_status="unpaid")
    pending = stripe_client.v1.checkout.sessions.retrieve(session.id, params={"expand": ["payment_intent"]})
    event = fake.async_succeed(session.id)
    settled = stripe_client.v1.checkout.sessions.retrieve(session.id, params={"expand": ["payment_intent"]})

    assert (pending.status, pending.payment_status) == ("complete", "unpaid")
    assert (pending.payment_intent.status, pending.payment_intent.latest_charge) == ("processing", None)
    assert event["type"] == "checkout.session.async_payment_succeeded"
    assert settled.payment_status == "paid"
    assert settled.payment_intent.status == "succeeded"
    assert settled.payment_intent.latest_charge in fake.charges


def test_failed_delayed_payment_leaves_the_session_unpaid(fake, stripe_client):
    session = create_session(stripe_client)
    fake.complete(session.id, payment_status="unpaid")

    event = fake.async_fail(session.id)
    failed = stripe_client.v1.checkout.sessions.retrieve(session.id, params={"expand": ["payment_intent"]})

    assert event["type"] == "checkout.session.async_payment_failed"
    assert (failed.status, failed.payment_status) == ("complete", "unpaid")
    assert failed.payment_intent.status == "requires_payment_method"
    with pytest.raises(ValueError):
        fake.async_succeed(session.id)


def test_expiring_an_open_session_emits_the_expired_event(fake, stripe_client):
    session = create_session(stripe_client)

    expired = stripe_client.v1.checkout.sessions.expire(session.id, options={"idempotency_key": "expire-1"})

    assert (expired.status, expired.url) == ("expired", None)
    event = fake.events[-1]
    assert (event["type"], event["data"]["object"]["id"]) == ("checkout.session.expired", session.id)
    assert event["request"]["idempotency_key"] == "expire-1"


def test_expiring_a_completed_session_is_refused(fake, stripe_client):
    session = create_session(stripe_client)
    fake.complete(session.id)

    with pytest.raises(stripe.InvalidRequestError) as refused:
        stripe_client.v1.checkout.sessions.expire(session.id)

    assert refused.value.user_message == "Only Checkout Sessions with a status of `open` can be expired."
    with pytest.raises(ValueError):
        fake.expire(session.id)


def test_partial_then_full_refund_updates_the_charge(fake, stripe_client):
    intent_id = paid_intent(fake, stripe_client)

    partial = stripe_client.v1.refunds.create(params={"payment_intent": intent_id, "amount": 1000,
                                               "metadata": {"order_id": "5"}, "reason": "requested_by_customer"})
    after_partial = stripe_client.v1.charges.retrieve(partial.charge)
    rest = stripe_client.v1.refunds.create(params={"payment_intent": intent_id})
    after_full = stripe_client.v1.charges.retrieve(partial.charge)

    assert (partial.object, partial.status, partial.amount) == ("refund", "succeeded", 1000)
    assert partial.metadata.to_dict() == {"order_id": "5"}
    assert (after_partial.amount_refunded, after_partial.refunded) == (1000, False)
    assert rest.amount == 3500
    assert (after_full.amount_refunded, after_full.refunded) == (4500, True)
    assert stripe_client.v1.refunds.retrieve(rest.id).payment_intent == intent_id
    assert [e["type"] for e in fake.events[-2:]] == ["charge.refunded", "charge.refunded"]


def test_refunding_more_than_remains_is_refused(fake, stripe_client):
    intent_id = paid_intent(fake, stripe_client)
    stripe_client.v1.refunds.create(params={"payment_intent": intent_id, "amount": 4000})

    with pytest.raises(stripe.InvalidRequestError) as too_much:
        stripe_client.v1.refunds.create(params={"payment_intent": intent_id, "amount": 501})
    stripe_client.v1.refunds.create(params={"payment_intent": intent_id, "amount": 500})
    with pytest.raises(stripe.InvalidRequestError) as nothing_left:
        stripe_client.v1.refunds.create(params={"payment_intent": intent_id})

    assert too_much.value.param == "amount"
    assert "greater than unrefunded amount" in too_much.value.user_message
    assert nothing_left.value.code == "charge_already_refunded"


def test_refund_control_returns_the_charge_refunded_event(fake, stripe_client):
    intent_id = paid_intent(fake, stripe_client)

    event = fake.refund(intent_id, amount=700)

    assert event["type"] == "charge.refunded"
    charge = event["data"]["object"]
    assert (charge["object"], charge["amount_refunded"], charge["refunded"]) == ("charge", 700, False)
    assert charge["refunds"]["data"][0]["amount"] == 700


def test_signed_payload_verifies_and_a_tampered_one_does_not(fake):
    payload = json.dumps(fake.event("ping.test", {"object": "ping", "id": "ping_1"}))
    header = fake.sign(payload)

    event = stripe.Webhook.construct_event(payload, header, WEBHOOK_SECRET)

    assert (event.type, event.data.object.id) == ("ping.test", "ping_1")
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(payload.replace("ping_1", "ping_2"), header, WEBHOOK_SECRET)
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(payload, fake.sign(payload, timestamp=int(time.time()) - 3600),
                                       WEBHOOK_SECRET)


def test_events_are_delivered_signed_before_the_control_returns(fake, stripe_client, inbox):
    session = create_session(stripe_client)

    event = fake.complete(session.id)

    body, header = inbox.received[-1]
    delivered = stripe.Webhook.construct_event(body, header, WEBHOOK_SECRET)
    assert delivered.id == event["id"]
    assert delivered.data.object.id == session.id
    assert event["pending_webhooks"] == 1
    assert fake.deliveries[-1] == (event["id"], 200)


def test_fail_next_surfaces_as_api_error(fake, stripe_client):
    session = create_session(stripe_client)
    fake.fail_next(status=500)

    with pytest.raises(stripe.APIError) as failed:
        stripe_client.v1.checkout.sessions.retrieve(session.id)

    assert failed.value.http_status == 500
    assert stripe_client.v1.checkout.sessions.retrieve(session.id).id == session.id


def test_down_surfaces_as_connection_error(fake, stripe_client):
    fake.down = True
    try:
        with pytest.raises(stripe.APIConnectionError):
            create_session(stripe_client)
    finally:
        fake.down = False

    assert create_session(stripe_client).status == "open"


def test_wrong_api_key_is_refused(fake):
    intruder = stripe.StripeClient("sk_test_wrong_key_1234", base_addresses={"api": fake.url},
                                   max_network_retries=0)

    with pytest.raises(stripe.AuthenticationError) as refused:
        intruder.v1.checkout.sessions.retrieve("cs_test_any")

    assert refused.value.http_status == 401
    assert refused.value.user_message.startswith("Invalid API Key provided: sk_test_")
    assert "wrong_key" not in refused.value.user_message


def test_unknown_id_is_resource_missing(stripe_client):
    with pytest.raises(stripe.InvalidRequestError) as missing:
        stripe_client.v1.checkout.sessions.retrieve("cs_test_nope")

    assert missing.value.http_status == 404
    assert missing.value.code == "resource_missing"
    assert missing.value.user_message == "No such checkout.session: 'cs_test_nope'"


def test_hosted_page_shows_the_order_and_pay_returns_to_success_url(fake, stripe_client, inbox):
    session = create_session(stripe_client)
    host = urllib.parse.urlsplit(fake.url).netloc
    page = http.client.HTTPConnection(host)
    page.request("GET", f"/c/pay/{session.id}")
    shown = page.getresponse().read().decode()
    page = http.client.HTTPConnection(host)
    page.request("POST", f"/c/pay/{session.id}")
    paid = page.getresponse()

    assert "Concert ticket" in shown and "€45.00" in shown
    assert "<button type=\"submit\">Pay</button>" in shown and "href=\"https://shop.test/cart\"" in shown
    assert paid.status == 303
    assert paid.getheader("Location") == f"https://shop.test/paid?session_id={session.id}"
    assert stripe_client.v1.checkout.sessions.retrieve(session.id).payment_status == "paid"
    assert json.loads(inbox.received[-1][0])["type"] == "checkout.session.completed"
