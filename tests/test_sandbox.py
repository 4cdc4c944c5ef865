"""Sandbox payments: with no Stripe key the shop sells through its own pay page, and only then."""
import json
import os
import re
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from shop.config import ConfigError, load_config
from shop.extensions import db
from shop.models import Admission, DeliveryPath, PaymentEvent, TicketOrder
from shop.models.base import utcnow
from shop.payments.sandbox.models import SandboxCheckout
from tests.support.stripe_server import FakeStripe

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PAY_URL = re.compile(r"^http://localhost/sandbox/pay/(sbx_[0-9a-f]+)$")


@pytest.fixture(scope="module")
def sandbox_app(shop_app):
    """A shop without STRIPE_SECRET_KEY on a database of its own, built by the migrations."""
    with shop_app(sandbox=True, new_database="sandbox") as app:
        yield app


@pytest.fixture
def sandbox(sandbox_app, empty_tables):
    """The sandbox app's context for factories and queries; its tables are emptied afterwards."""
    with sandbox_app.app_context():
        yield sandbox_app
        db.session.remove()
    empty_tables(sandbox_app)


@pytest.fixture
def buyer(sandbox):
    """A browser-like client of the sandbox shop, with CSRF enforced.

    ``buyer.token(path)`` reads a page's CSRF token and keeps it as ``buyer.csrf_token``: like a
    browser tab left open, a token from one page is good for every form of the session.
    """
    client = sandbox.test_client()

    def token(path):
        page = client.get(path).get_data(as_text=True)
        client.csrf_token = re.search(r'name="csrf_token" (?:type="hidden" )?value="([^"]+)"', page).group(1)
        return client.csrf_token

    client.token = token
    return client


def submit_buy_form(buyer, ticket, quantity=2, email="buyer@example.com"):
    """Submit the event page's buy form; returns the response (a redirect to the pay page when it worked)."""
    token = buyer.token(f"/events/{ticket.event_id}")
    return buyer.post(f"/events/{ticket.event_id}/tickets/{ticket.id}/checkout",
                      data={"quantity": str(quantity), "email": email, "csrf_token": token})


def pay(buyer, pay_path):
    """Press "Pay" on the sandbox page (as from a tab still showing it: with the token the buyer already has)."""
    return buyer.post(pay_path, data={"csrf_token": buyer.csrf_token})


@pytest.fixture
def pay_path(buyer, make):
    """A pending order for 2 × 12.50 and the path of its sandbox pay page."""
    ticket = make.ticket(price="12.50", capacity=10, name="Standing")
    response = submit_buy_form(buyer, ticket)
    assert response.status_code == 303, response.get_data(as_text=True)
    return response.headers["Location"].removeprefix("http://localhost")


def the_order():
    return db.session.query(TicketOrder).one()


def test_checkout_without_a_stripe_key_redirects_to_the_sandbox_pay_page(sandbox, buyer, make, reload):
    ticket = make.ticket(price="12.50", capacity=10)

    response = submit_buy_form(buyer, ticket)

    assert response.status_code == 303
    match = PAY_URL.match(response.headers["Location"])
    assert match, response.headers["Location"]
    order = the_order()
    assert order.status == "pending" and order.checkout_ref == match.group(1)
    assert db.session.get(SandboxCheckout, match.group(1)) is not None
    assert reload(ticket).held_quantity == 2


def test_sandbox_pay_page_shows_the_amount_and_line_items(sandbox, buyer, pay_path):
    page = buyer.get(pay_path)

    text = page.get_data(as_text=True)
    assert page.status_code == 200
    assert "2 × " in text and "— Standing" in text
    assert "Total: <strong>25.00 USD</strong>" in text
    assert "Pay 25.00 USD</button>" in text
    assert "Paying as buyer@example.com" in text


def test_paying_in_the_sandbox_marks_the_order_paid_through_fulfilment(sandbox, buyer, pay_path, reload):
    response = pay(buyer, pay_path)

    assert response.status_code == 303
    assert response.headers["Location"].startswith("http://localhost/checkout/success?session_id=sbx_")
    order = the_order()
    assert order.status == "paid" and order.payment_ref.startswith("sbxpay_")
    assert reload(order.ticket).sold_quantity == 2 and reload(order.ticket).held_quantity == 0
    assert db.session.query(Admission).filter_by(order_id=order.id).count() == 2
    # The pay button re-reads the checkout, as fulfilment does for a provider's event; no event is made up.
    assert db.session.query(PaymentEvent).count() == 0
    assert db.session.get(DeliveryPath, "sandbox").deliveries == 1
    success = buyer.get(response.headers["Location"].removeprefix("http://localhost"))
    assert "you're going" in success.get_data(as_text=True)


def test_paying_a_sandbox_checkout_twice_is_refused_with_409(sandbox, buyer, pay_path, reload):
    assert pay(buyer, pay_path).status_code == 303

    again = pay(buyer, pay_path)

    assert again.status_code == 409
    assert "can no longer be paid" in again.get_data(as_text=True)
    order = the_order()
    assert order.status == "paid" and reload(order.ticket).sold_quantity == 2
    assert db.session.get(DeliveryPath, "sandbox").deliveries == 1
    assert db.session.query(Admission).filter_by(order_id=order.id).count() == 2


def test_sandbox_pay_without_csrf_token_is_refused_and_charges_nothing(sandbox, buyer, pay_path):
    response = buyer.post(pay_path, data={})

    assert response.status_code == 400
    assert the_order().status == "pending"
    assert db.session.get(DeliveryPath, "sandbox") is None


def test_sandbox_pay_page_of_an_unknown_session_is_404(sandbox, buyer):
    assert buyer.get("/sandbox/pay/sbx_000000000000000000000000").status_code == 404


def test_paying_an_unknown_sandbox_session_is_404(sandbox, buyer, monkeypatch, make):
    monkeypatch.setitem(sandbox.config, "PROPAGATE_EXCEPTIONS", False)  # a crash shows as the 500 a buyer gets
    ticket = make.ticket()
    token = buyer.token(f"/events/{ticket.event_id}")

    response = buyer.post("/sandbox/pay/sbx_000000000000000000000000", data={"csrf_token": token})

    assert response.status_code == 404
    assert db.session.get(DeliveryPath, "sandbox") is None


def test_cancel_link_on_the_sandbox_page_releases_the_seats(sandbox, buyer, pay_path, reload):
    pay_page = buyer.get(pay_path).get_data(as_text=True)
    cancel_url = re.search(r'<a href="([^"]+)">Cancel and go back</a>', pay_page).group(1)

    confirm = buyer.get(cancel_url.replace("&amp;", "&").removeprefix("http://localhost")).get_data(as_text=True)
    token = re.search(r'name="token" value="([^"]+)"', confirm).group(1)
    page = buyer.post("/checkout/cancel", data={"token": token, "csrf_token": buyer.token(pay_path)})

    assert page.status_code == 200 and "Nothing was charged" in page.get_data(as_text=True)
    order = the_order()
    assert order.status == "cancelled" and reload(order.ticket).held_quantity == 0
    assert pay(buyer, pay_path).status_code == 409


def test_sandbox_refuses_payment_once_the_checkout_has_expired(sandbox, buyer, pay_path):
    """Stripe takes no payment after a session's expires_at, which is when the order's hold ends."""
    row = db.session.get(SandboxCheckout, pay_path.rsplit("/", 1)[1])
    row.expires_at = utcnow() - timedelta(minutes=1)
    db.session.commit()

    response = pay(buyer, pay_path)

    assert response.status_code == 409
    assert the_order().status != "paid"
    assert db.session.query(Admission).count() == 0


def test_webhook_route_answers_400_in_sandbox_mode(sandbox, buyer):
    signer = FakeStripe()  # only to sign like Stripe: a correctly signed body must not get in either
    body = json.dumps({"id": "evt_forged", "object": "event", "type": "checkout.session.completed",
                       "data": {"object": {"id": "cs_sandbox_forged", "object": "checkout.session"}}})

    response = buyer.post("/webhooks/stripe", data=body, content_type="application/json",
                          headers={"Stripe-Signature": signer.sign(body, "whsec_test_secret")})

    assert response.status_code == 400
    assert "sandbox accepts no webhooks" in response.json["error"]
    assert db.session.query(PaymentEvent).count() == 0


def test_app_with_a_stripe_key_has_no_sandbox_route(app, client):
    assert app.extensions["shop.payments"].name == "stripe"
    assert client.get("/sandbox/pay/sbx_000000000000000000000000").status_code == 404
    assert client.post("/sandbox/pay/sbx_000000000000000000000000").status_code == 404
    assert "Sandbox payments" not in client.get("/").get_data(as_text=True)


def test_sandbox_runs_only_when_chosen_or_in_the_embedded_default(tmp_path):
    base = {"DATABASE_URL": "mysql+pymysql://shop@db/shop", "SECRET_KEY": "4f1c9e27b8d05a63c2e9f71b0a6d3e58",
            "SHOP_BASE_URL": "https://tickets.example.com"}
    assert load_config({**base, "SHOP_PAYMENTS": "sandbox"}, instance_path=tmp_path)["STRIPE"].sandbox is True
    live = {**base, "STRIPE_SECRET_KEY": "sk_live_abc123"}
    assert load_config(live, instance_path=tmp_path)["STRIPE"].sandbox is False
    assert load_config({}, instance_path=tmp_path)["STRIPE"].sandbox is True  # SQLite and no key: the demo
    with pytest.raises(ConfigError):
        load_config(base, instance_path=tmp_path)  # a real database never falls back to the sandbox


@pytest.mark.parametrize("setting, variable", [
    ({"STRIPE_SECRET_KEY": "pk_test_123"}, "STRIPE_SECRET_KEY"),
    ({"STRIPE_SECRET_KEY": "sk_test_"}, "STRIPE_SECRET_KEY"),
    ({"SHOP_CURRENCY": "dollars"}, "SHOP_CURRENCY"),
    ({"SHOP_CURRENCY": "jpy"}, "SHOP_CURRENCY"),
    ({"SHOP_MAX_PER_ORDER": "ten"}, "SHOP_MAX_PER_ORDER"),
    ({"SECRET_KEY": ""}, "SECRET_KEY"),
], ids=["publishable-key", "empty-secret-key", "currency-word", "currency-without-cents", "max-per-order-word",
        "no-secret-key-on-a-database"])
def test_malformed_setting_raises_config_error_naming_it_in_one_line(tmp_path, setting, variable):
    env = {"DATABASE_URL": "mysql+pymysql://shop@db/shop", "SECRET_KEY": "s" * 32, **setting}

    with pytest.raises(ConfigError) as raised:
        load_config(env, instance_path=tmp_path)

    message = str(raised.value)
    assert message.startswith(f"{variable} must ") and "\n" not in message
    assert not (tmp_path / "secret_key").exists()


@pytest.mark.parametrize("setting", [{"SHOP_CURRENCY": "dollars"}, {"STRIPE_SECRET_KEY": "sk_nonsense"}],
                         ids=["currency", "stripe-key"])
def test_wsgi_with_a_bad_setting_exits_with_one_line_on_stderr(setting):
    env = {name: value for name, value in os.environ.items()
           if not name.startswith(("STRIPE_", "SHOP_", "SQS_", "AWS_")) and name not in ("DATABASE_URL", "SECRET_KEY")}
    env.update({"DATABASE_URL": "mysql+pymysql://shop@127.0.0.1/shop", "SECRET_KEY": "s" * 32, **setting})

    result = subprocess.run([sys.executable, "-c", "import wsgi"], cwd=PROJECT_ROOT, env=env,
                            capture_output=True, text=True, timeout=60)

    assert result.returncode != 0
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("shop: configuration error: ") and next(iter(setting)) in lines[0]
    assert result.stdout == ""
