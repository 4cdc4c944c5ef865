"""A buyer in a real browser: Chromium against the shop served on loopback, paying on Stripe's hosted page.

The shop runs in a werkzeug server thread; Stripe is a FakeStripe of this module's own whose
hosted page completes the session and posts the signed webhook back to the shop, as Stripe
would. The sandbox shop (no Stripe key) runs on a database of its own.
"""
import re
from decimal import Decimal
from types import SimpleNamespace

import pytest
from playwright.sync_api import expect

from shop.extensions import db
from shop.models import Admission, DeliveryPath, PaymentEvent, TicketOrder, User
from tests.support.apps import STRIPE_KEY, WEBHOOK_SECRET
from tests.support.browser import ARTIFACTS, needs_chromium
from tests.support.stripe_server import FakeStripe

pytestmark = [pytest.mark.slow, needs_chromium]

PASSWORD = "correct horse battery"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def page(chromium):
    """A fresh browser profile (no cookies) per test."""
    context = chromium.new_context()
    context.set_default_timeout(10_000)
    yield context.new_page()
    context.close()


@pytest.fixture(scope="module")
def stripe_shop(app, shop_app, live_server):
    """The shop on the session's test database, talking to a FakeStripe that delivers webhooks to it.

    Depending on ``app`` makes conftest build the database and empty its tables after each test.
    """
    stripe = FakeStripe(api_key=STRIPE_KEY).start()
    with shop_app(stripe_url=stripe.url, testing=False) as served_app, live_server(served_app) as url:
        stripe.webhook_url, stripe.webhook_secret = f"{url}/webhooks/stripe", WEBHOOK_SECRET
        yield SimpleNamespace(url=url, stripe=stripe)
    stripe.stop()


@pytest.fixture(scope="module")
def sandbox_shop(shop_app, live_server):
    """A shop without STRIPE_SECRET_KEY on its own database, seeded by ``flask shop seed-demo``."""
    with shop_app(sandbox=True, new_database="browser_sandbox", testing=False) as app:
        seeded = app.test_cli_runner().invoke(args=["shop", "seed-demo"])
        assert seeded.exit_code == 0, seeded.output
        with live_server(app) as url:
            yield SimpleNamespace(url=url, app=app)


def buy(page, ticket_id, quantity, email):
    """Fill in the event page's one order form for one kind of ticket and press Buy."""
    form = page.locator("#order")
    form.locator(f"#qty-{ticket_id}").fill(str(quantity))
    form.get_by_label("Email").fill(email)
    form.get_by_role("button", name="Buy").click()


def assert_png(path):
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 1000, f"{path} is not a screenshot"


def test_registered_buyer_pays_on_stripe_and_finds_two_tickets_on_the_profile(
        stripe_shop, page, ctx, tmp_path, make, reload):
    shop, stripe = stripe_shop.url, stripe_shop.stripe
    ticket = make.ticket(make.event(title="Night of the Modular Synths"), name="Standing", price="25.00", capacity=50)

    page.goto(f"{shop}/register")
    page.get_by_label("Email").fill("Fan@Example.com")
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_label("Repeat the password").fill(PASSWORD)
    page.get_by_role("button", name="Register").click()
    expect(page).to_have_url(f"{shop}/profile")

    page.goto(f"{shop}/events/{ticket.event_id}")
    expect(page.locator(f"#ticket-{ticket.id} .left")).to_have_text("50 left")
    page.screenshot(path=tmp_path / "event.png", full_page=True)
    buy(page, ticket.id, 2, "fan@example.com")

    expect(page).to_have_url(re.compile(re.escape(f"{stripe.url}/c/pay/cs_test_")))
    expect(page.locator("#total")).to_have_text("$50.00")
    page.get_by_role("button", name="Pay").click()

    expect(page).to_have_url(re.compile(re.escape(f"{shop}/checkout/success?session_id=cs_test_")))
    expect(page.get_by_role("heading", level=1)).to_have_text("Thank you — you're going!")
    page.get_by_role("link", name="My tickets").click()

    expect(page).to_have_url(f"{shop}/profile")
    db.session.rollback()
    order = db.session.query(TicketOrder).one()
    card = page.locator(f"#order-{order.id}")
    expect(card.locator(".status")).to_have_text("Paid")
    expect(card.locator(".admissions code")).to_have_count(2)
    page.screenshot(path=tmp_path / "profile.png", full_page=True)
    shown = set(card.locator(".admissions code").all_inner_texts())

    user = db.session.query(User).one()
    assert user.email == "fan@example.com" and order.user_id == user.id
    assert order.status == "paid" and order.quantity == 2 and order.email == "fan@example.com"
    assert reload(ticket).sold_quantity == 2 and reload(ticket).held_quantity == 0
    assert shown == {a.code for a in db.session.query(Admission).filter_by(order_id=order.id)}
    # Stripe's webhook reached the shop and paid the order before the buyer was back.
    event = db.session.query(PaymentEvent).filter_by(type="checkout.session.completed").one()
    assert (event.delivered_by, event.order_id, event.outcome) == ("webhook", order.id, "paid")
    assert (event.id, 200) in stripe.deliveries
    assert_png(tmp_path / "event.png")
    assert_png(tmp_path / "profile.png")


def cancel_on_stripe(page, shop, stripe, ticket, quantity):
    """A guest buys on the event page, reaches Stripe's hosted page and leaves it through "Cancel"."""
    page.goto(f"{shop}/events/{ticket.event_id}")
    buy(page, ticket.id, quantity, "guest@example.com")
    expect(page).to_have_url(re.compile(re.escape(f"{stripe.url}/c/pay/cs_test_")))
    page.get_by_role("link", name="Cancel").click()
    expect(page).to_have_url(re.compile(re.escape(f"{shop}/checkout/cancel?")))
    expect(page.get_by_role("heading", level=1)).to_have_text("Cancel this checkout?")
    page.get_by_role("button", name="Cancel my checkout").click()


def test_guest_who_cancels_on_stripe_is_told_nothing_was_charged_and_the_seats_return(
        stripe_shop, page, ctx, make, reload):
    shop, stripe = stripe_shop.url, stripe_shop.stripe
    ticket = make.ticket(make.event(title="String Quartet at Dawn"), name="Seat", price="35.00", capacity=5)

    cancel_on_stripe(page, shop, stripe, ticket, 3)

    expect(page.get_by_role("heading", level=1)).to_have_text("Checkout cancelled")
    expect(page.get_by_text("Nothing was charged and your seats were released.")).to_be_visible()
    page.get_by_role("link", name="Back to String Quartet at Dawn").click()
    expect(page.locator(f"#ticket-{ticket.id} .left")).to_have_text("5 left")
    db.session.rollback()
    order = db.session.query(TicketOrder).one()
    assert order.status in ("cancelled", "expired") and order.user_id is None and order.paid_at is None
    assert reload(ticket).held_quantity == 0 and reload(ticket).sold_quantity == 0
    assert stripe.sessions[order.checkout_ref]["status"] == "expired"
    assert stripe.sessions[order.checkout_ref]["payment_intent"] is None


def test_cancel_page_calls_the_order_cancelled_even_when_stripes_expiry_webhook_came_first(
        stripe_shop, page, ctx, make):
    """Expiring the session makes Stripe send checkout.session.expired; here it lands before the page's re-read."""
    shop, stripe = stripe_shop.url, stripe_shop.stripe
    ticket = make.ticket(name="Seat", price="35.00", capacity=5)

    cancel_on_stripe(page, shop, stripe, ticket, 1)

    db.session.rollback()
    order = db.session.query(TicketOrder).one()
    expiry = db.session.query(PaymentEvent).filter_by(type="checkout.session.expired").one()
    assert expiry.delivered_by == "webhook" and expiry.order_id == order.id
    expect(page.locator(".status")).to_have_text("Cancelled — nothing was charged", timeout=1000)
    assert order.status == "cancelled"


def test_sandbox_buyer_pays_on_the_sandbox_page_end_to_end(sandbox_shop, page):
    shop = sandbox_shop.url

    page.goto(f"{shop}/")
    expect(page.get_by_text("Sandbox payments: no Stripe key is set")).to_be_visible()
    page.get_by_role("link", name="PyCon Lightning Evening").click()
    expect(page).to_have_url(re.compile(re.escape(f"{shop}/events/")))
    event_url = page.url
    ticket_section = page.locator("section.ticket", has_text="Supporter")
    ticket_id = int(ticket_section.get_attribute("id").removeprefix("ticket-"))
    expect(ticket_section.locator(".left")).to_have_text("20 left")
    buy(page, ticket_id, 2, "sandbox@example.com")

    expect(page).to_have_url(re.compile(re.escape(f"{shop}/sandbox/pay/sbx_")))
    expect(page.get_by_text("2 × PyCon Lightning Evening — Supporter")).to_be_visible()
    page.get_by_role("button", name="Pay 60.00 USD").click()

    expect(page).to_have_url(re.compile(re.escape(f"{shop}/checkout/success?session_id=sbx_")))
    expect(page.get_by_role("heading", level=1)).to_have_text("Thank you — you're going!")
    expect(page.locator(".admissions code")).to_have_count(2)  # the browser that paid sees its tickets
    page.goto(event_url)
    expect(page.locator(f"#ticket-{ticket_id} .left")).to_have_text("18 left")

    with sandbox_shop.app.app_context():
        order = db.session.query(TicketOrder).one()
        assert order.status == "paid" and order.quantity == 2 and order.ticket_id == ticket_id
        assert order.ticket.sold_quantity == 2 and order.ticket.held_quantity == 0
        assert db.session.get(DeliveryPath, "sandbox").deliveries == 1
        db.session.remove()





def test_buyer_orders_two_kinds_in_one_order_seeing_the_discount_before_paying(stripe_shop, page, ctx, make,
                                                                              reload):
    """2 adults + 1 child in one order: "Show price" prices it with the code (no script), then one Stripe page."""
    shop, stripe = stripe_shop.url, stripe_shop.stripe
    event = make.event(title="Family Circus")
    adult = make.ticket(event, name="Adult", price="30.00", capacity=20)
    child = make.ticket(event, name="Child", price="12.50", capacity=20)
    make.discount("FAMILY", percent_off=20)
    ARTIFACTS.mkdir(exist_ok=True)

    page.goto(f"{shop}/events/{event.id}")
    order_form = page.locator("#order")
    order_form.get_by_label("Adult").fill("2")
    order_form.get_by_label("Child").fill("1")
    order_form.get_by_label("Email").fill("family@example.com")
    order_form.get_by_label("Discount code").fill("family")
    order_form.get_by_role("button", name="Show price").click()

    expect(page.locator("#order-total")).to_have_text("58.00 USD")
    preview = page.locator("#order-preview")
    expect(preview).to_contain_text("FAMILY (20% off)")
    expect(preview.locator("del")).to_have_count(2)  # each line shows its price before the code
    expect(page.locator("#order").get_by_label("Adult")).to_have_value("2")  # the form comes back as filled in
    page.screenshot(path=ARTIFACTS / "order-preview.png", full_page=True)
    assert reload(adult).held_quantity == 0  # a preview holds nothing

    page.locator("#order").get_by_role("button", name="Buy").click()
    expect(page).to_have_url(re.compile(re.escape(f"{stripe.url}/c/pay/cs_test_")))
    expect(page.locator("#total")).to_have_text("$58.00")
    expect(page.get_by_text("Family Circus — Adult (was 30.00, 6.00 off each)")).to_be_visible()
    expect(page.get_by_text("Family Circus — Child (was 12.50, 2.50 off each)")).to_be_visible()
    page.screenshot(path=ARTIFACTS / "order-stripe-page.png", full_page=True)
    page.get_by_role("button", name="Pay").click()

    expect(page).to_have_url(re.compile(re.escape(f"{shop}/checkout/success?session_id=cs_test_")))
    expect(page.get_by_text("2 × Adult, 1 × Child")).to_be_visible()
    expect(page.locator(".admissions code")).to_have_count(3)
    page.screenshot(path=ARTIFACTS / "order-paid.png", full_page=True)
    db.session.rollback()
    order = db.session.query(TicketOrder).one()
    assert order.status == "paid" and order.total_amount == Decimal("58.00") and len(order.items) == 2
    assert (reload(adult).sold_quantity, reload(child).sold_quantity) == (2, 1)
    for name in ("order-preview", "order-stripe-page", "order-paid"):
        assert_png(ARTIFACTS / f"{name}.png")
