"""Who may use the console: every route, for an anonymous visitor, a buyer, door staff and an admin."""
import pytest

from shop.extensions import db
from shop.models import ApiToken, AuditEntry, User
from shop.services.events import create_quota

ADMIN, DOOR = {"admin"}, {"admin", "door"}
# Every console route, with a request that reaches it, and who may use it.
ROUTES = [
    ("GET", "/console/", DOOR),
    ("GET", "/console/events/new", ADMIN),
    ("POST", "/console/events/new", ADMIN),
    ("GET", "/console/events/{event}", ADMIN),
    ("GET", "/console/events/{event}/edit", ADMIN),
    ("POST", "/console/events/{event}/edit", ADMIN),
    ("POST", "/console/events/{event}/publish", ADMIN),
    ("POST", "/console/events/{event}/unpublish", ADMIN),
    ("GET", "/console/events/{event}/tickets/new", ADMIN),
    ("POST", "/console/events/{event}/tickets/new", ADMIN),
    ("GET", "/console/tickets/{ticket}/edit", ADMIN),
    ("POST", "/console/tickets/{ticket}/edit", ADMIN),
    ("GET", "/console/events/{event}/quotas/new", ADMIN),
    ("POST", "/console/events/{event}/quotas/new", ADMIN),
    ("GET", "/console/quotas/{quota}/edit", ADMIN),
    ("POST", "/console/quotas/{quota}/edit", ADMIN),
    ("GET", "/console/discounts", ADMIN),
    ("GET", "/console/discounts/new", ADMIN),
    ("POST", "/console/discounts/new", ADMIN),
    ("GET", "/console/discounts/{discount}/edit", ADMIN),
    ("POST", "/console/discounts/{discount}/edit", ADMIN),
    ("GET", "/console/orders?q=buyer", ADMIN),
    ("GET", "/console/orders/{order}", ADMIN),
    ("POST", "/console/orders/{order}/refund", ADMIN),
    ("POST", "/console/orders/{order}/lines/{item}/refund", ADMIN),
    ("POST", "/console/orders/{order}/tickets/{admission}/void", ADMIN),
    ("POST", "/console/orders/{order}/resend", ADMIN),
    ("POST", "/console/orders/{order}/resolve", ADMIN),
    ("GET", "/console/events/{event}/orders.csv", ADMIN),
    ("GET", "/console/events/{event}/attendees.csv", ADMIN),
    ("GET", "/console/audit", ADMIN),
    ("GET", "/console/events/{event}/checkin", DOOR),
    ("POST", "/console/events/{event}/checkin", DOOR),
    ("POST", "/console/events/{event}/checkin/undo", DOOR),
    ("GET", "/console/events/{event}/checkin/counts", DOOR),
]


@pytest.fixture
def world(make, place_order, pay):
    """An event with a ticket type, a discount code and a paid order with one ticket."""
    ticket = make.ticket(price="20.00")
    order = pay(place_order(ticket, email="buyer@example.com"))
    return {"event": ticket.event_id, "ticket": ticket.id, "order": order.id, "admission": order.admissions[0].id,
            "item": order.items[0].id,
            "discount": make.discount("WORLD10").id,
            "quota": create_quota(ticket.event_id, name="hall", capacity=50).id}


def requests_for(world):
    for method, path, allowed in ROUTES:
        yield method, path.format(**world), allowed


def test_every_console_route_is_in_the_table(app):
    rules = {(method, rule.rule) for rule in app.url_map.iter_rules() if rule.rule.startswith("/console")
             for method in rule.methods - {"HEAD", "OPTIONS"}}
    listed = {(method, path.split("?")[0].replace("{event}", "<int:event_id>").replace("{ticket}", "<int:ticket_id>")
               .replace("{discount}", "<int:discount_id>").replace("{order}", "<int:order_id>")
               .replace("{admission}", "<int:admission_id>").replace("{quota}", "<int:quota_id>")
               .replace("{item}", "<int:item_id>"))
              for method, path, _ in ROUTES}
    assert rules == listed


def test_anonymous_visitors_get_the_login_page(form_client, world):
    for method, path, _ in requests_for(world):
        response = form_client.open(path, method=method)
        assert response.status_code == 302, (method, path, response.status_code)
        assert response.headers["Location"].startswith("/login?next="), (method, path)
        response.close()


def test_anonymous_json_gets_401_not_a_redirect(form_client, world):
    response = form_client.post(f"/console/events/{world['event']}/checkin", json={"code": "X"})
    assert response.status_code == 401 and "error" in response.get_json()


@pytest.mark.parametrize("role", ["buyer", "door", "admin"])
def test_each_role_reaches_exactly_its_routes(form_client, staff, world, role):
    staff.login(role)
    wrong = []
    for method, path, allowed in requests_for(world):
        response = form_client.open(path, method=method, data={})
        refused = response.status_code == 403
        if refused == (role in allowed) or response.status_code in (302, 401) and "/login" in (response.location or ""):
            wrong.append((method, path, response.status_code))
        if role in allowed:
            assert response.status_code < 500, (method, path, response.get_data(as_text=True)[:500])
        response.close()  # a streamed export ends here, in this request's context
    assert wrong == []


def test_a_revoked_admin_is_refused_at_once(form_client, staff, ctx, world, app):
    admin = staff.login("admin")
    assert form_client.get("/console/").status_code == 200

    result = app.test_cli_runner().invoke(args=["shop", "revoke-staff", admin.email])

    assert result.exit_code == 0, result.output
    assert form_client.get("/console/").status_code in (302, 403)
    db.session.rollback()
    assert db.session.get(User, admin.id).role is None
    assert db.session.query(AuditEntry).filter_by(action="staff.revoke").one().target_id == str(admin.id)


@pytest.fixture
def door_token(app, ctx, make):
    door = make.user(email="scanner@example.com", role="door")
    result = app.test_cli_runner().invoke(args=["shop", "create-api-token", door.email])
    assert result.exit_code == 0, result.output
    return result.output.strip()


def test_the_checkin_api_takes_a_staff_token_instead_of_csrf(client, world, door_token, ctx):
    response = client.post(f"/console/events/{world['event']}/checkin", json={"code": "NOPE"},
                           headers={"Authorization": f"Bearer {door_token}"})

    assert response.status_code == 404 and response.get_json()["result"] == "unknown"
    assert db.session.query(ApiToken).one().last_used_at is not None
    assert door_token not in {t.token_hash for t in db.session.query(ApiToken)}  # only its digest is kept


def test_a_wrong_token_or_a_buyers_token_is_401(client, world, door_token, ctx, make, app):
    url = f"/console/events/{world['event']}/checkin"
    assert client.post(url, json={"code": "X"}, headers={"Authorization": "Bearer shop_wrong"}).status_code == 401
    app.test_cli_runner().invoke(args=["shop", "revoke-staff", "scanner@example.com"])
    assert client.post(url, json={"code": "X"},
                       headers={"Authorization": f"Bearer {door_token}"}).status_code == 401


def test_a_session_post_without_the_csrf_token_is_refused(app, csrf_client, make):
    # Rows made in a context of their own: requests under the test's app context would share its ``g``,
    # where Flask-WTF keeps the token it generated for the first request.
    with app.app_context():
        make.user(email="door@example.com", role="door")
        event_id = make.event().id
        db.session.remove()
    token = csrf_client.token("/login")
    csrf_client.post("/login", data={"email": "door@example.com", "password": "correct horse battery",
                                     "csrf_token": token})
    url = f"/console/events/{event_id}/checkin"

    refused = csrf_client.post(url, json={"code": "X"})
    page_token = csrf_client.token(url)
    allowed = csrf_client.post(url, json={"code": "X"}, headers={"X-CSRFToken": page_token})

    assert refused.status_code == 400
    assert allowed.status_code == 404 and allowed.get_json()["result"] == "unknown", allowed.get_data(as_text=True)


def test_console_pages_are_never_cached(form_client, staff, world):
    staff.login("admin")
    response = form_client.get(f"/console/orders/{world['order']}")
    assert response.status_code == 200 and response.headers["Cache-Control"] == "no-store"
