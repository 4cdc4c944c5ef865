"""The webhook inlet and fulfilment: an order turns paid once, only when Stripe says so."""
import copy
import threading
import time

import pytest

from shop.extensions import db
from shop.models import Admission, Outcome, OutcomeKind, OutcomeReason, PaymentEvent, TicketOrder


@pytest.fixture
def placed(make, place_order):
    """A pending order for 3 tickets, placed through the checkout service."""
    return place_order(make.ticket(capacity=10, price="15.00"), quantity=3)


def test_full_loop_for_a_guest(form_client, stripe_server, ctx, make, reload, webhook):
    client = form_client
    ticket = make.ticket(capacity=10, price="12.50")
    client.post(f"/events/{ticket.event_id}/tickets/{ticket.id}/checkout",
                data={"quantity": "3", "email": "guest@example.com"})
    order = db.session.query(TicketOrder).one()
    event = stripe_server.complete(order.checkout_ref)

    assert webhook.post(event).status_code == 200

    order = reload(order)
    assert order.status == "paid" and order.paid_at is not None and order.user_id is None
    assert order.payment_ref == stripe_server.sessions[order.checkout_ref]["payment_intent"]
    assert reload(ticket).sold_quantity == 3 and reload(ticket).held_quantity == 0
    assert db.session.query(Admission).filter_by(order_id=order.id).count() == 3
    success = client.get(f"/checkout/success?session_id={order.checkout_ref}").get_data(as_text=True)
    assert "going" in success
    # A guest has no profile: the success page is where their tickets are.
    assert all(a.code in success for a in db.session.query(Admission).filter_by(order_id=order.id))


def test_full_loop_for_a_logged_in_buyer_shows_tickets_on_the_profile(
        form_client, stripe_server, ctx, make, webhook, auth):
    client = form_client
    user = make.user()
    ticket = make.ticket(capacity=10)
    auth.login(user)
    client.post(f"/events/{ticket.event_id}/tickets/{ticket.id}/checkout", data={"quantity": "2", "email": user.email})
    order = db.session.query(TicketOrder).one()
    assert "Awaiting payment" in client.get("/profile").get_data(as_text=True)

    webhook.post(stripe_server.complete(order.checkout_ref))

    profile = client.get("/profile").get_data(as_text=True)
    codes = [a.code for a in db.session.query(Admission).filter_by(order_id=order.id)]
    assert len(codes) == 2 and all(code in profile for code in codes)
    assert "Paid" in profile and "<svg" in profile


def test_quantity_three_adds_three_to_sold_quantity(placed, stripe_server, reload, webhook):
    webhook.post(stripe_server.complete(placed.checkout_ref))
    assert reload(placed.ticket).sold_quantity == 3


def test_discount_use_counted_once_paid(ctx, stripe_server, make, reload, place_order, webhook):
    ticket = make.ticket()
    code = make.discount("TEN", percent_off=10)
    order = place_order(ticket, discount_code="ten")
    assert reload(code).reserved_count == 1 and reload(code).used_count == 0
    webhook.post(stripe_server.complete(order.checkout_ref))
    assert reload(code).used_count == 1 and reload(code).reserved_count == 0


def test_same_event_ten_times_changes_the_database_once(placed, stripe_server, reload, webhook):
    event = stripe_server.complete(placed.checkout_ref)
    answers = [webhook.post(event) for _ in range(10)]
    assert [a.status_code for a in answers] == [200] * 10
    assert [a.json["outcome"] for a in answers].count("paid") == 1
    assert reload(placed.ticket).sold_quantity == 3
    assert db.session.query(Admission).count() == 3
    assert db.session.query(PaymentEvent).count() == 1


def test_same_event_concurrently_from_many_threads_changes_the_database_once(
        app, placed, stripe_server, reload, webhook):
    event = stripe_server.complete(placed.checkout_ref)
    barrier = threading.Barrier(10)
    codes = []

    def deliver():
        with app.app_context():
            client = app.test_client()
            barrier.wait()
            codes.append(webhook.post(event, client=client).status_code)
            db.session.remove()

    threads = [threading.Thread(target=deliver) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert codes == [200] * 10
    assert reload(placed.ticket).sold_quantity == 3
    assert db.session.query(Admission).count() == 3


def test_bad_signature_changes_nothing(placed, client, stripe_server, reload, webhook):
    event = stripe_server.complete(placed.checkout_ref)
    assert webhook.post(event, secret="whsec_wrong").status_code == 400
    assert webhook.post(event, header="").status_code == 400
    assert client.post("/webhooks/stripe", json=event).status_code == 400
    assert reload(placed).status == "pending" and db.session.query(PaymentEvent).count() == 0


def test_stale_timestamp_is_refused(placed, stripe_server, reload, webhook):
    event = stripe_server.complete(placed.checkout_ref)
    assert webhook.post(event, timestamp=int(time.time()) - 600).status_code == 400
    assert reload(placed).status == "pending"


def test_event_without_order_id_is_recorded_and_acknowledged(placed, stripe_server, reload, webhook):
    event = stripe_server.complete(placed.checkout_ref)
    stripe_server.sessions[placed.checkout_ref]["metadata"] = {}
    response = webhook.post(event)
    assert response.status_code == 200 and response.json["reason"] == "no_order_id"
    assert reload(placed).status == "pending"
    assert db.session.get(PaymentEvent, event["id"]).result == Outcome(OutcomeKind.IGNORED, OutcomeReason.NO_ORDER_ID)


def test_event_for_an_unknown_order_is_acknowledged(placed, stripe_server, reload, webhook):
    event = stripe_server.complete(placed.checkout_ref)
    stripe_server.sessions[placed.checkout_ref]["metadata"]["order_id"] = "987654"
    response = webhook.post(event)
    assert response.status_code == 200 and response.json["reason"] == "unknown_order"
    assert reload(placed).status == "pending"


def test_payload_is_not_trusted_forged_amount_in_event_is_ignored(placed, stripe_server, reload, webhook):
    """The event claims paid, but Stripe's session (re-read) is still open: nothing is paid."""
    forged = stripe_server.event("checkout.session.completed",
                                 {**copy.deepcopy(stripe_server.sessions[placed.checkout_ref]),
                                  "status": "complete", "payment_status": "paid"})
    response = webhook.post(forged)
    assert response.status_code == 200 and reload(placed).status == "pending"


def test_amount_mismatch_at_stripe_is_refused_and_flagged(placed, stripe_server, reload, webhook):
    event = stripe_server.complete(placed.checkout_ref)
    stripe_server.sessions[placed.checkout_ref]["amount_total"] = 100
    response = webhook.post(event)
    order = reload(placed)
    assert response.status_code == 200 and (response.json["kind"], response.json["reason"]) == ("flagged", "mismatch")
    assert order.status == "pending" and order.needs_attention and "amount" in order.attention_reason
    assert reload(placed.ticket).sold_quantity == 0


def test_currency_mismatch_is_refused(placed, stripe_server, reload, webhook):
    event = stripe_server.complete(placed.checkout_ref)
    stripe_server.sessions[placed.checkout_ref]["currency"] = "eur"
    assert webhook.post(event).json["reason"] == "mismatch"
    assert reload(placed).status == "pending"


def test_session_of_another_order_is_refused(placed, stripe_server, reload, place_order, webhook):
    other = place_order(placed.ticket, quantity=3)
    event = stripe_server.complete(other.checkout_ref)
    stripe_server.sessions[other.checkout_ref]["metadata"]["order_id"] = str(placed.id)
    assert webhook.post(event).json["reason"] == "mismatch"
    assert reload(placed).status == "pending" and reload(other).status == "pending"


def test_unhandled_event_type_is_acknowledged(ctx, stripe_server, webhook):
    event = stripe_server.event("customer.created", {"id": "cus_1", "object": "customer"})
    response = webhook.post(event)
    assert response.status_code == 200 and response.json["kind"] == "ignored"


def test_success_page_fulfils_before_the_webhook(placed, client, stripe_server, reload):
    stripe_server.complete(placed.checkout_ref)
    page = client.get(f"/checkout/success?session_id={placed.checkout_ref}")
    assert page.status_code == 200 and "going" in page.get_data(as_text=True)
    assert reload(placed).status == "paid"


def test_success_page_for_an_open_session_says_pending(placed, client, reload):
    page = client.get(f"/checkout/success?session_id={placed.checkout_ref}")
    assert "confirming your payment" in page.get_data(as_text=True) and reload(placed).status == "pending"


def test_success_page_with_unknown_or_malformed_session_is_404_without_asking_stripe(ctx, client, stripe_server):
    calls = len(stripe_server.requests)
    assert client.get("/checkout/success?session_id=cs_test_unknown").status_code == 404
    assert client.get("/checkout/success?session_id=<script>").status_code == 404
    assert len(stripe_server.requests) == calls


def test_stripe_unreachable_during_webhook_answers_503_then_the_retry_pays(placed, stripe_server, reload, webhook):
    event = stripe_server.complete(placed.checkout_ref)
    stripe_server.down = True
    try:
        assert webhook.post(event).status_code == 503
    finally:
        stripe_server.down = False
    assert reload(placed).status == "pending"
    assert db.session.get(PaymentEvent, event["id"]).error
    assert webhook.post(event).json["outcome"] == "paid"


def test_database_down_answers_503_so_stripe_retries(stripe_server, shop_app, webhook):
    event = stripe_server.event("checkout.session.completed", {"id": "cs_test_x", "object": "checkout.session"})
    with shop_app(database_url="mysql+pymysql://root@127.0.0.1:1/nowhere") as broken:
        assert webhook.post(event, client=broken.test_client()).status_code == 503
        assert broken.test_client().get("/healthz").status_code == 503


def test_healthz_answers_when_the_database_does(client, ctx):
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json == {"status": "ok"}
