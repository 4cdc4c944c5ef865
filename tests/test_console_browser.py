"""The back office and the door in Chromium: an admin creates and publishes an event with two ticket types, a
buyer pays on Stripe's (local) hosted page, and door staff check the tickets in by typed code on a phone.

Screenshots go to tests/artifacts/ (not committed): the dashboard, and each answer at the door at phone width.
"""
import re
from types import SimpleNamespace

import pytest
from playwright.sync_api import expect

from shop.extensions import db
from shop.models import Admission, AuditEntry, Event, TicketOrder
from tests.support.apps import STRIPE_KEY, WEBHOOK_SECRET
from tests.support.browser import ARTIFACTS, needs_chromium
from tests.support.stripe_server import FakeStripe

PHONE = {"width": 390, "height": 844}
pytestmark = [pytest.mark.slow, needs_chromium]
PASSWORD = "correct horse battery"


@pytest.fixture(scope="module")
def served(app, shop_app, live_server):
    """The shop on the session's database, served on loopback, with a local Stripe that posts webhooks to it."""
    stripe = FakeStripe(api_key=STRIPE_KEY).start()
    with shop_app(stripe_url=stripe.url, testing=False) as served_app, live_server(served_app) as url:
        stripe.webhook_url, stripe.webhook_secret = f"{url}/webhooks/stripe", WEBHOOK_SECRET
        yield SimpleNamespace(url=url, stripe=stripe)
    stripe.stop()


def person(browser, viewport=None):
    context = browser.new_context(viewport=viewport or {"width": 1280, "height": 900})
    context.set_default_timeout(10_000)
    return context, context.new_page()


def log_in(page, shop, email):
    page.goto(f"{shop}/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(f"{shop}/profile")


def add_ticket_type(page, name, price, capacity):
    page.get_by_role("link", name="Add a ticket type").click()
    page.get_by_label("Name").fill(name)
    page.get_by_label("Price").fill(price)
    page.get_by_label("Capacity").fill(capacity)
    page.get_by_role("button", name="Add ticket type").click()
    expect(page.locator(".notice")).to_have_text(f"Added {name}.")


def shoot(page, name):
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=path, full_page=True)
    assert path.read_bytes().startswith(b"\x89PNG") and path.stat().st_size > 1000


def scan(page, code, result):
    page.get_by_label("Ticket code").fill(code)
    page.get_by_label("Ticket code").press("Enter")
    expect(page.locator("#answer-result")).to_have_text(result)


def test_admin_publishes_buyer_pays_door_checks_in(served, chromium, ctx, make):
    shop, stripe = served.url, served.stripe
    admin = make.user(email="organizer@example.com", role="admin")
    door = make.user(email="door@example.com", role="door")
    admin_context, console = person(chromium)
    log_in(console, shop, admin.email)

    console.get_by_role("link", name="Console").click()
    console.get_by_role("link", name="New event").click()
    console.get_by_label("Title").fill("Harbour Lights")
    console.get_by_label("Venue").fill("Pier 4")
    console.get_by_label("Starts at").fill("2031-06-01T20:00+02:00")
    console.get_by_label("Description").fill("Boats, lanterns and a brass band.")
    console.get_by_role("button", name="Create draft").click()
    expect(console.get_by_role("heading", level=1)).to_contain_text("Harbour Lights draft")
    add_ticket_type(console, "Deck", "12.50", "80")
    add_ticket_type(console, "Captain's table", "60.00", "8")
    event_id = int(re.search(r"/console/events/(\d+)", console.url).group(1))

    buyer_context, buyer = person(chromium)
    assert buyer.goto(f"{shop}/events/{event_id}").status == 404  # a draft is not public

    console.get_by_role("button", name="Publish").click()
    expect(console.locator(".notice")).to_contain_text("Published")
    expect(console.get_by_role("heading", level=1)).to_contain_text("published")

    buyer.goto(f"{shop}/events/{event_id}")
    expect(buyer.locator("section.ticket")).to_have_count(2)
    order = buyer.locator("#order")
    order.locator("label", has_text="Deck").locator("input").fill("2")
    order.get_by_label("Email").fill("sailor@example.com")
    order.get_by_role("button", name="Buy").click()
    expect(buyer).to_have_url(re.compile(re.escape(f"{stripe.url}/c/pay/cs_test_")))
    buyer.get_by_role("button", name="Pay").click()
    expect(buyer.get_by_role("heading", level=1)).to_have_text("Thank you — you're going!")
    codes = buyer.locator(".admissions code").all_inner_texts()
    assert len(codes) == 2

    console.goto(f"{shop}/console/")
    row = console.locator(f"#event-{event_id}")
    expect(row.locator("td.num").nth(1)).to_have_text("2")          # sold
    expect(row.locator("td.num").nth(4)).to_have_text("25.00 USD")  # gross
    shoot(console, "console-dashboard.png")
    console.set_viewport_size(PHONE)
    shoot(console, "console-dashboard-phone.png")

    door_context, phone = person(chromium, PHONE)
    log_in(phone, shop, door.email)
    phone.goto(f"{shop}/console/")
    phone.get_by_role("link", name="Harbour Lights").click()
    expect(phone.locator(".counts")).to_have_text("0 checked in of 2 expected")

    scan(phone, codes[0], "VALID")
    expect(phone.locator("#answer-message")).to_have_text("Valid: checked in. Deck")
    expect(phone.locator(".counts")).to_have_text("1 checked in of 2 expected")
    shoot(phone, "door-valid.png")

    scan(phone, codes[0].lower(), "ALREADY CHECKED IN")
    expect(phone.locator("#answer-message")).to_contain_text("by door@example.com")
    shoot(phone, "door-already.png")

    db.session.rollback()
    order = db.session.query(TicketOrder).one()
    console.set_viewport_size({"width": 1280, "height": 900})
    console.goto(f"{shop}/console/orders?q={codes[1]}")
    console.get_by_role("link", name=f"#{order.id}").click()
    console.locator(f"#admission-{admission_id(codes[1])}").get_by_role("button", name="Void this ticket").click()
    expect(console.locator(".notice")).to_contain_text("The ticket is void")

    scan(phone, codes[1], "VOID")
    shoot(phone, "door-void.png")
    scan(phone, "NOT-A-TICKET", "UNKNOWN")
    shoot(phone, "door-unknown.png")
    expect(phone.get_by_role("button", name="Undo check-in")).to_be_hidden()
    expect(phone.locator(".counts")).to_have_text("1 checked in of 1 expected")

    db.session.rollback()
    assert db.session.get(Event, event_id).status == "published"
    assert db.session.query(Admission).filter(Admission.checked_in_at.isnot(None)).count() == 1
    actions = {e.action for e in db.session.query(AuditEntry)}
    assert {"event.create", "ticket_type.create", "event.publish", "checkin", "admission.void"} <= actions
    for context in (admin_context, buyer_context, door_context):
        context.close()


def admission_id(code):
    return db.session.query(Admission).filter_by(code=code).one().id
