"""Tickets reach a guest in a real browser: buy, get the email, open the ticket, print it; and axe-core finds
no serious accessibility problem on the pages a buyer sees.

The shop runs in a werkzeug server thread with its mail sender thread, sending to the aiosmtpd server
on loopback; Stripe is a FakeStripe whose hosted page pays and posts the signed webhook back.
Screenshots and the printed PDF are kept in ``tests/artifacts/``.
"""
import io
import re
import threading
from datetime import datetime
from types import SimpleNamespace

import pytest
from pypdf import PdfReader

from shop.extensions import db
from shop.models import TicketOrder
from shop.ops.background import run_mail_sender
from shop.timezones import to_utc
from tests.support.apps import STRIPE_KEY, WEBHOOK_SECRET
from tests.support.browser import needs_chromium
from tests.support.stripe_server import FakeStripe

pytestmark = [pytest.mark.slow, needs_chromium]

PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}
# Letter, as Chromium prints by default, less its margins, in CSS pixels.
PRINTABLE_HEIGHT = 11 * 96 - 2 * 45


@pytest.fixture(scope="module")
def shop(app, shop_app, live_server, smtp_server):
    """The shop served on loopback with its mail sender running, talking to a FakeStripe that delivers webhooks."""
    stripe = FakeStripe(api_key=STRIPE_KEY).start()
    stop = threading.Event()
    with shop_app(stripe_url=stripe.url, testing=False) as served_app, live_server(served_app) as url:
        stripe.webhook_url, stripe.webhook_secret = f"{url}/webhooks/stripe", WEBHOOK_SECRET
        sender = threading.Thread(target=run_mail_sender, args=(served_app, stop, 1), daemon=True)
        sender.start()
        yield SimpleNamespace(url=url, stripe=stripe, app=served_app)
        stop.set()
        sender.join(10)
    stripe.stop()


@pytest.fixture
def browse(chromium):
    """``browse(viewport=…, bypass_csp=False)``: a page in a fresh browser profile; all are closed after the test."""
    contexts = []

    def new_page(viewport=DESKTOP, bypass_csp=False):
        context = chromium.new_context(viewport=viewport, bypass_csp=bypass_csp)
        context.set_default_timeout(10_000)
        contexts.append(context)
        return context.new_page()
    yield new_page
    for context in contexts:
        context.close()


def berlin_gig(make):
    event = make.event(title="Night of the Modular Synths", venue="The Warehouse, Berlin", timezone="Europe/Berlin",
                       starts_at=to_utc(datetime(2030, 3, 1, 20, 30), "Europe/Berlin"),
                       description="Six artists, forty patch cables, one long night.")
    make.ticket(event, name="Balcony", price="45.00", capacity=40)
    return make.ticket(event, name="Standing", price="25.00", capacity=300)


def buy_as_guest(page, shop, ticket, quantity, email, before_paying=None):
    """On the event page, fill in the ticket type's form, pay on Stripe's page, land on the success page.

    ``before_paying(checkout_url)`` runs while the buyer is on Stripe's page.
    """
    from playwright.sync_api import expect
    page.goto(f"{shop.url}/events/{ticket.event_id}")
    form = page.locator("#order")
    form.locator(f"#qty-{ticket.id}").fill(str(quantity))
    form.get_by_label("Email").fill(email)
    form.get_by_role("button", name="Buy").click()
    expect(page).to_have_url(re.compile(re.escape(f"{shop.stripe.url}/c/pay/cs_test_")))
    if before_paying:
        before_paying(page.url)
    page.get_by_role("button", name="Pay").click()
    expect(page).to_have_url(re.compile(re.escape(f"{shop.url}/checkout/success?session_id=cs_test_")))
    expect(page.get_by_role("heading", level=1)).to_have_text("Thank you — you're going!")


def test_a_guest_buys_opens_the_emailed_ticket_and_prints_it_on_one_page(shop, browse, ctx, make, mailbox,
                                                                         artifacts):
    from playwright.sync_api import expect
    ticket = berlin_gig(make)
    page = browse()

    def look_at_the_wait(checkout_url):
        """Another tab on the success page before paying: the wait, with the hold's end in Berlin time."""
        waiting = browse(viewport=PHONE)
        waiting.goto(f"{shop.url}/checkout/success?session_id={checkout_url.rsplit('/', 1)[1]}")
        expect(waiting.get_by_role("heading", level=1)).to_have_text("We're confirming your payment")
        expect(waiting.get_by_text("Your seats are held until")).to_contain_text(re.compile(r"\d\d:\d\d CET"))
        assert waiting.locator('meta[http-equiv="refresh"]').count() == 1
        waiting.screenshot(path=artifacts / "success-pending-phone.png", full_page=True)

    buy_as_guest(page, shop, ticket, 2, "guest@example.com", before_paying=look_at_the_wait)
    page.screenshot(path=artifacts / "success-paid.png", full_page=True)

    (mail,) = mailbox.wait_for(1, to="guest@example.com", timeout=15)
    links = re.findall(rf"{re.escape(shop.url)}/tickets/[A-Z2-7]{{16}}", mail.text)
    assert mail.subject == "Your tickets: Night of the Modular Synths" and len(links) == 2
    assert "Fri 01 Mar 2030, 20:30 CET" in mail.text and "order-" in next(iter(mail.attachments()))

    phone = browse(viewport=PHONE)
    phone.goto(links[0])
    expect(phone.get_by_role("heading", level=1)).to_have_text("Night of the Modular Synths")
    expect(phone.locator(".when")).to_have_text("Fri 01 Mar 2030, 20:30 CET")
    expect(phone.locator(".ticket-qr svg")).to_be_visible()
    expect(phone.locator(".ticket-facts")).to_contain_text("Standing")
    expect(phone.locator(".ticket-facts")).to_contain_text("Valid")
    phone.screenshot(path=artifacts / "ticket-phone.png", full_page=True)
    code = links[0].rsplit("/", 1)[1]

    desktop = browse()
    desktop.goto(links[0])
    desktop.emulate_media(media="print")
    qr = desktop.locator(".ticket-qr svg").bounding_box()
    ticket_box = desktop.locator(".ticket-page").bounding_box()
    desktop.screenshot(path=artifacts / "ticket-print.png", full_page=True)
    assert qr["width"] > 250 and ticket_box["y"] + ticket_box["height"] < PRINTABLE_HEIGHT
    expect(desktop.locator("header.top")).to_be_hidden()
    pdf = desktop.pdf(path=artifacts / "ticket.pdf", print_background=True)

    reader = PdfReader(io.BytesIO(pdf))
    text = reader.pages[0].extract_text()
    assert len(reader.pages) == 1
    assert "Night of the Modular Synths" in text and "20:30 CET" in text and code in text
    assert "The Warehouse, Berlin" in text and "Standing" in text


def axe_violations(page, axe):
    """axe-core's serious and critical violations on the page as shown."""
    page.add_script_tag(path=str(axe))
    result = page.evaluate("axe.run(document, {resultTypes: ['violations']})")
    return [(v["id"], v["impact"], [n["target"] for n in v["nodes"]][:3])
            for v in result["violations"] if v["impact"] in ("serious", "critical")]


def test_axe_finds_no_serious_problem_on_the_event_success_ticket_and_profile_pages(shop, browse, ctx, make, axe,
                                                                                   artifacts, mailbox):
    from playwright.sync_api import expect
    ticket = berlin_gig(make)
    user = make.user(email="fan@example.com")
    # CSP forbids injected scripts; axe is injected by the test only, so this browser profile ignores it.
    page = browse(bypass_csp=True)
    found = {}

    page.goto(f"{shop.url}/events/{ticket.event_id}")
    found["event"] = axe_violations(page, axe)

    page.goto(f"{shop.url}/login")
    page.get_by_label("Email").fill(user.email)
    page.get_by_label("Password").fill("correct horse battery")
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(f"{shop.url}/profile")
    buy_as_guest(page, shop, ticket, 2, user.email)
    found["success"] = axe_violations(page, axe)

    page.goto(f"{shop.url}/profile")
    expect(page.locator(".admissions code")).to_have_count(2)
    page.screenshot(path=artifacts / "profile.png", full_page=True)
    found["profile"] = axe_violations(page, axe)

    db.session.rollback()
    order = db.session.query(TicketOrder).one()
    page.goto(f"{shop.url}/tickets/{order.admissions[0].code}")
    found["ticket"] = axe_violations(page, axe)

    page.goto(f"{shop.url}/orders/lookup")
    found["lookup"] = axe_violations(page, axe)
    page.set_viewport_size(PHONE)
    page.goto(f"{shop.url}/events/{ticket.event_id}")
    page.screenshot(path=artifacts / "event-phone.png", full_page=True)
    found["event on a phone"] = axe_violations(page, axe)

    assert found == {name: [] for name in found}, found
