"""Tickets in their holders' hands: ticket pages, local times, calendar files, the guest look-up, verified
accounts, password reset, the profile, and the pages' markup."""
import re
import time
from datetime import datetime, timedelta
from html.parser import HTMLParser

import pytest
from icalendar import Calendar
from itsdangerous import TimestampSigner, URLSafeTimedSerializer
from sqlalchemy import select, update

from shop.extensions import db
from shop.models import Admission, MessageKind, OutboxMessage, TicketOrder, User
from shop.models.base import utcnow
from shop.services.outbox import send_due
from shop.timezones import to_local, to_utc

TICKET_LINK = re.compile(r"http://localhost/tickets/([A-Z2-7]{16})")
LOOKUP_LINK = re.compile(r"http://localhost/orders/lookup/([\w.-]+)")


@pytest.fixture
def pay(stripe_server, webhook, reload):
    """``pay(order)``: Stripe completes the order's checkout and the webhook reports it; returns the order."""
    def paid(order):
        assert webhook.post(stripe_server.complete(order.checkout_ref)).status_code == 200
        order = reload(order)
        assert order.status == "paid"
        return order
    return paid


def outbox(kind=None):
    db.session.rollback()
    query = select(OutboxMessage).order_by(OutboxMessage.id)
    if kind is not None:
        query = query.where(OutboxMessage.kind == kind.value)
    return db.session.execute(query).scalars().all()


class Ids(HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids = []

    def handle_starttag(self, tag, attrs):
        self.ids += [value for name, value in attrs if name == "id"]


def ids_of(html):
    parser = Ids()
    parser.feed(html)
    return parser.ids


# ----- the ticket page -----

def test_ticket_page_shows_one_admission_with_event_local_time_venue_type_order_and_a_large_qr(
        ctx, client, make, place_order, pay):
    event = make.event(title="Night of the Modular Synths", venue="The Warehouse, Berlin", timezone="Europe/Berlin",
                       starts_at=to_utc(datetime(2030, 3, 1, 20, 30), "Europe/Berlin"))
    order = pay(place_order(make.ticket(event, name="Balcony"), quantity=2))
    first, second = order.admissions

    response = client.get(f"/tickets/{first.code}")

    page = response.get_data(as_text=True)
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store" and response.headers["Referrer-Policy"] == "no-referrer"
    assert "Night of the Modular Synths" in page and "The Warehouse, Berlin" in page and "Balcony" in page
    assert "Fri 01 Mar 2030, 20:30 CET" in page and f"#{order.id}" in page and "Valid" in page
    assert first.code in page and second.code not in page  # one admission per page
    assert '<svg viewBox="0 0 ' in page  # sized by the stylesheet, not a thumbnail
    assert client.get(f"/tickets/{first.code.lower()}").status_code == 200  # typed in lower case still works


def test_codes_carry_80_random_bits_in_an_alphabet_without_look_alikes(ctx, make, place_order, pay):
    order = pay(place_order(make.ticket(), quantity=5))
    codes = [a.code for a in order.admissions]
    assert len(set(codes)) == 5
    assert all(re.fullmatch(r"[A-Z2-7]{16}", code) for code in codes)  # 16 × 5 bits; no 0, 1, 8 or 9


def test_a_refunded_ticket_page_says_void_and_shows_no_qr(ctx, client, make, place_order, pay, stripe_server,
                                                          webhook):
    order = pay(place_order(make.ticket()))
    webhook.post(stripe_server.refund(order.payment_ref))
    page = client.get(f"/tickets/{order.admissions[0].code}").get_data(as_text=True)
    assert "Void — refunded" in page and "<svg" not in page


def test_unknown_or_malformed_codes_are_404(ctx, client):
    assert client.get("/tickets/AAAAAAAAAAAAAAAA").status_code == 404
    assert client.get("/tickets/%3Cscript%3E").status_code == 404


# ----- local times -----

@pytest.mark.parametrize("zone, local, label", [
    ("Europe/Berlin", datetime(2030, 3, 1, 19, 30), "19:30 CET"),
    ("America/New_York", datetime(2030, 7, 4, 19, 30), "19:30 EDT"),
])
def test_events_show_their_local_hour_on_every_page_and_in_the_email(
        ctx, client, make, place_order, pay, mailbox, zone, local, label):
    event = make.event(title="Local gig", timezone=zone, starts_at=to_utc(local, zone))
    ticket = make.ticket(event)
    assert event.starts_at != local  # stored in UTC

    assert label in client.get("/").get_data(as_text=True)
    assert label in client.get(f"/events/{event.id}").get_data(as_text=True)
    order = pay(place_order(ticket))
    assert label in client.get(f"/tickets/{order.admissions[0].code}").get_data(as_text=True)
    send_due()
    assert label in mailbox.wait_for(1)[0].text


def test_the_calendar_file_parses_with_the_event_in_its_local_time(ctx, client, make, place_order, pay):
    event = make.event(title="Jazz Brunch", venue="Blue Note", timezone="Europe/Berlin",
                       starts_at=to_utc(datetime(2030, 3, 1, 11, 0), "Europe/Berlin"))
    order = pay(place_order(make.ticket(event), quantity=2))

    response = client.get(f"/tickets/{order.admissions[0].code}/calendar.ics")

    assert response.status_code == 200 and response.mimetype == "text/calendar"
    calendar = Calendar.from_ical(response.data)
    (entry,) = calendar.walk("VEVENT")
    start = entry.decoded("dtstart")
    assert (start.hour, start.minute, str(start.tzinfo)) == (11, 0, "Europe/Berlin")
    assert str(entry["summary"]) == "Jazz Brunch" and str(entry["location"]) == "Blue Note"
    assert all(f"/tickets/{a.code}" in str(entry["description"]) for a in order.admissions)
    assert [str(tz["tzid"]) for tz in calendar.walk("VTIMEZONE")] == ["Europe/Berlin"]


# ----- the guest look-up -----

def test_the_look_up_answers_the_same_and_mails_only_an_address_with_orders(ctx, form_client, make, place_order):
    place_order(make.ticket(), email="guest@example.com")
    known = form_client.post("/orders/lookup", data={"email": "Guest@Example.com"})
    unknown = form_client.post("/orders/lookup", data={"email": "nobody@example.com"})

    assert known.status_code == unknown.status_code == 200
    strip = lambda r: re.sub(r'name="csrf_token" value="[^"]*"', "", r.get_data(as_text=True))  # noqa: E731
    assert strip(known) == strip(unknown) and "If we have orders for that address" in strip(known)
    (message,) = outbox(MessageKind.ORDER_LOOKUP)
    assert message.recipient == "guest@example.com"


def test_a_look_up_link_lists_the_addresses_orders_with_their_ticket_links(ctx, form_client, client, make,
                                                                           place_order, pay):
    mine = pay(place_order(make.ticket(make.event(title="Mine")), email="guest@example.com", quantity=2))
    place_order(make.ticket(make.event(title="Someone else's")), email="other@example.com")
    form_client.post("/orders/lookup", data={"email": "guest@example.com"})
    token = LOOKUP_LINK.search(outbox(MessageKind.ORDER_LOOKUP)[0].body_text).group(1)

    response = client.get(f"/orders/lookup/{token}")

    page = response.get_data(as_text=True)
    assert response.status_code == 200 and response.headers["Cache-Control"] == "no-store"
    assert "Mine" in page and "Someone else" not in page
    assert all(f"/tickets/{a.code}" in page for a in mine.admissions)


def old_link(app, email, age):
    """A look-up link made ``age`` ago, as the shop made it then."""
    class SignedThen(TimestampSigner):
        def get_timestamp(self):
            return int(time.time() - age.total_seconds())
    serializer = URLSafeTimedSerializer(app.config["SECRET_KEY"], salt="shop-link-order-lookup", signer=SignedThen)
    return serializer.dumps(email)


def test_a_tampered_or_expired_look_up_link_is_refused(app, ctx, client, make, place_order):
    place_order(make.ticket(), email="guest@example.com")
    fresh = old_link(app, "guest@example.com", timedelta(hours=23))
    assert client.get(f"/orders/lookup/{fresh}").status_code == 200

    expired = client.get(f"/orders/lookup/{old_link(app, 'guest@example.com', timedelta(hours=25))}")
    assert expired.status_code == 410 and "This link has expired" in expired.get_data(as_text=True)
    payload, rest = fresh.split(".", 1)
    forged = URLSafeTimedSerializer("not the shop's key", salt="shop-link-order-lookup").dumps("other@example.com")
    for token in (forged, payload[:-2] + "xx." + rest, fresh[:-3]):
        response = client.get(f"/orders/lookup/{token}")
        assert response.status_code == 404 and "This link does not work" in response.get_data(as_text=True)


def test_the_look_up_form_is_rate_limited(shop_app, make):
    with shop_app(RATELIMIT_ENABLED="true", SHOP_LIMIT_EMAIL_FORMS="2 per minute") as limited:
        limited.config["WTF_CSRF_ENABLED"] = False
        client = limited.test_client()
        codes = [client.post("/orders/lookup", data={"email": f"x{i}@example.com"}).status_code for i in range(3)]
    assert codes == [200, 200, 429]


def test_bad_look_up_input_gets_a_clear_error(ctx, form_client):
    response = form_client.post("/orders/lookup", data={"email": "not-an-email"})
    assert response.status_code == 400 and "Enter a valid email address." in response.get_data(as_text=True)


# ----- verified accounts -----

def test_an_unverified_account_sees_no_guest_orders(ctx, form_client, auth, make, place_order):
    user = make.user(email="fan@example.com")
    guest_order = place_order(make.ticket(make.event(title="Bought as a guest")), email="fan@example.com")
    own_order = place_order(make.ticket(make.event(title="Bought logged in")), email="fan@example.com", user=user)
    auth.login(user)

    profile = form_client.get("/profile").get_data(as_text=True)

    assert "Bought logged in" in profile and f"order-{own_order.id}" in profile
    assert "Bought as a guest" not in profile and f"order-{guest_order.id}" not in profile
    assert form_client.get(f"/orders/{guest_order.id}").status_code == 404
    assert "Please confirm your email address" in profile


def test_registering_mails_a_link_that_verifies_and_brings_the_guest_orders_in(ctx, form_client, make, place_order,
                                                                               reload):
    guest_order = place_order(make.ticket(make.event(title="Bought as a guest")), email="fan@example.com")
    form_client.post("/register", data={"email": "Fan@Example.com", "password": "long enough 1",
                                        "confirm": "long enough 1"})
    (message,) = outbox(MessageKind.VERIFY_EMAIL)
    assert message.recipient == "fan@example.com"
    assert "Bought as a guest" not in form_client.get("/profile").get_data(as_text=True)

    link = re.search(r"http://localhost(/account/verify/\S+)", message.body_text).group(1)
    answer = form_client.get(link)

    user = db.session.execute(select(User)).scalar_one()
    assert answer.status_code == 200 and "1 order you placed" in answer.get_data(as_text=True)
    assert user.email_verified_at is not None and reload(guest_order).user_id == user.id
    assert "Bought as a guest" in form_client.get("/profile").get_data(as_text=True)
    # Guest orders placed with the address later join too.
    later = place_order(make.ticket(make.event(title="Bought later as a guest")), email="fan@example.com")
    assert f"order-{later.id}" in form_client.get("/profile").get_data(as_text=True)


def test_a_tampered_verification_link_verifies_nothing(ctx, client, make):
    user = make.user()
    assert client.get("/account/verify/not-a-token").status_code == 404
    db.session.rollback()
    assert db.session.get(User, user.id).email_verified_at is None


# ----- password reset -----

def test_password_reset_by_email_works_once(ctx, form_client, make):
    user = make.user(email="forgetful@example.com")
    for email in ("forgetful@example.com", "nobody@example.com"):
        answer = form_client.post("/password/reset", data={"email": email})
        assert answer.status_code == 200 and "If an account has that address" in answer.get_data(as_text=True)
    (message,) = outbox(MessageKind.PASSWORD_RESET)
    link = re.search(r"http://localhost(/password/reset/\S+)", message.body_text).group(1)

    changed = form_client.post(link, data={"password": "a brand new one", "confirm": "a brand new one"})

    assert changed.status_code == 303 and changed.headers["Location"] == "/login"
    assert form_client.post("/login", data={"email": user.email, "password": "a brand new one"}).status_code == 302
    assert form_client.get(link).status_code == 404  # used once: the password it was made for is gone


# ----- the profile and the order page -----

def test_the_profile_groups_tickets_by_event_upcoming_first_and_folds_the_past(ctx, form_client, auth, make,
                                                                               place_order, pay):
    user = make.user()
    later = make.event(title="Later gig", starts_at=utcnow() + timedelta(days=60))
    sooner = make.event(title="Sooner gig", starts_at=utcnow() + timedelta(days=5))
    for event in (later, sooner):
        pay(place_order(make.ticket(event), user=user))
    past_ticket = make.ticket(make.event(title="Last year's gig", starts_at=utcnow() + timedelta(days=1)))
    pay(place_order(past_ticket, user=user))
    db.session.execute(update(type(later)).where(type(later).id == past_ticket.event_id)
                       .values(starts_at=utcnow() - timedelta(days=300)))
    db.session.commit()
    auth.login(user)

    profile = form_client.get("/profile").get_data(as_text=True)

    assert profile.index("Sooner gig") < profile.index("Later gig") < profile.index("<details")
    assert profile.index("<details") < profile.index("Last year&#39;s gig")


def test_a_pending_order_can_be_resumed_or_cancelled_from_the_profile(ctx, form_client, auth, make, place_order,
                                                                      reload):
    user = make.user()
    ticket = make.ticket(capacity=3)
    order = place_order(ticket, quantity=2, user=user)
    auth.login(user)
    profile = form_client.get("/profile").get_data(as_text=True)
    assert f'href="{order.checkout_url}"' in profile and "Resume payment" in profile
    assert "Your seats are held until" in profile

    answer = form_client.post(f"/orders/{order.id}/cancel")

    assert answer.status_code == 303 and reload(order).status == "cancelled"
    assert reload(ticket).held_quantity == 0
    profile = form_client.get("/profile").get_data(as_text=True)
    assert "Resume payment" not in profile
    # A cancelled order is one quiet line, never a ticket card.
    assert f'<li id="order-{order.id}">' in profile and '<article class="card order order-cancelled"' not in profile


def test_the_order_page_resends_the_tickets_and_offers_the_calendar(ctx, form_client, auth, make, place_order, pay):
    user = make.user()
    order = pay(place_order(make.ticket(), user=user))
    auth.login(user)
    page = form_client.get(f"/orders/{order.id}").get_data(as_text=True)
    assert f"/orders/{order.id}/calendar.ics" in page and f"/tickets/{order.admissions[0].code}" in page

    assert form_client.post(f"/orders/{order.id}/resend").status_code == 303
    assert form_client.post(f"/orders/{order.id}/resend").status_code == 303

    assert len(outbox(MessageKind.ORDER_CONFIRMATION)) == 1 and len(outbox(MessageKind.TICKETS_RESENT)) == 2
    assert form_client.get(f"/orders/{order.id}/calendar.ics").mimetype == "text/calendar"


# ----- the success page -----

def test_the_success_page_shows_until_when_the_seats_are_held_in_local_time(ctx, client, make, place_order):
    event = make.event(timezone="America/New_York")
    order = place_order(make.ticket(event))
    page = client.get(f"/checkout/success?session_id={order.checkout_ref}").get_data(as_text=True)
    held_until = to_local(order.hold_expires_at, "America/New_York")
    assert f"Your seats are held until <strong>{held_until:%a %d %b %Y, %H:%M} E" in page
    assert 'http-equiv="refresh"' in page


def test_an_expired_checkout_offers_the_way_back_to_its_event(ctx, client, make, place_order, stripe_server,
                                                              webhook):
    order = place_order(make.ticket(make.event(title="Missed gig")))
    webhook.post(stripe_server.expire(order.checkout_ref))
    page = client.get(f"/checkout/success?session_id={order.checkout_ref}").get_data(as_text=True)
    assert "This checkout has ended" in page and f'href="/events/{order.event_id}"' in page
    assert "Back to Missed gig" in page


def test_a_paid_success_page_links_each_ticket(ctx, form_client, make, pay):
    ticket = make.ticket()
    form_client.post(f"/events/{ticket.event_id}/tickets/{ticket.id}/checkout",
                     data={"quantity": "2", "email": "Guest@Example.com"})
    order = db.session.execute(select(TicketOrder)).scalar_one()
    assert order.email == "guest@example.com"
    order = pay(order)
    page = form_client.get(f"/checkout/success?session_id={order.checkout_ref}").get_data(as_text=True)
    assert all(f'href="/tickets/{a.code}"' in page for a in order.admissions)


# ----- markup -----

def test_the_event_page_has_one_id_per_form_field(ctx, client, make):
    event = make.event()
    for name in ("Standing", "Balcony", "Box"):
        make.ticket(event, name=name)
    ids = ids_of(client.get(f"/events/{event.id}").get_data(as_text=True))
    assert len(ids) == len(set(ids)) and len(ids) >= 12


def test_a_refused_checkout_shows_its_error_in_its_own_card_once(ctx, form_client, make):
    event = make.event()
    make.ticket(event, name="Standing")
    small = make.ticket(event, name="Box", capacity=2)
    response = form_client.post(f"/events/{event.id}/tickets/{small.id}/checkout",
                                data={"quantity": "3", "email": "a@example.com"})
    page = response.get_data(as_text=True)
    card = page[page.index(f'id="ticket-{small.id}"'):]
    assert response.status_code == 409 and page.count("Only 2 tickets left") == 1
    assert "Only 2 tickets left" in card and "Only 2 tickets left" not in page[:page.index(f'id="ticket-{small.id}"')]
    # The page has one form, for the whole order; the kinds' cards only say what is left and what went wrong.
    assert page.count("<form") == 1 + page.count('action="/logout"')
    assert f'action="/events/{event.id}/checkout#order"' in page


def test_pages_link_the_favicon_and_say_one_in_the_singular(ctx, client, make):
    make.ticket(capacity=1)
    page = client.get("/").get_data(as_text=True)
    assert 'rel="icon"' in page and "1 ticket left" in page
    assert client.get("/static/favicon.svg").status_code == 200


def test_admissions_written_before_this_change_still_open_their_page(ctx, client, make, place_order, pay):
    order = pay(place_order(make.ticket()))
    db.session.execute(update(Admission).where(Admission.order_id == order.id).values(code="0A1B2C3D4E5F6789"))
    db.session.commit()
    assert client.get("/tickets/0A1B2C3D4E5F6789").status_code == 200
