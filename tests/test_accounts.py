"""Accounts: registration, login with a safe ``next``, and who may see which order."""
import pytest

from shop.extensions import db
from shop.models import User
from tests.conftest import login
from tests.support.factories import checkout, make_ticket, make_user


def test_register_hashes_the_password_and_logs_in(ctx, form_client):
    response = form_client.post("/register", data={"email": "New@Example.com", "password": "s3cret-enough",
                                                   "confirm": "s3cret-enough"})
    assert response.status_code == 302 and response.headers["Location"] == "/profile"
    user = db.session.query(User).one()
    assert user.email == "new@example.com" and "s3cret-enough" not in user.password_hash
    assert user.check_password("s3cret-enough")
    assert form_client.get("/profile").status_code == 200


def test_register_twice_with_one_email_is_refused(ctx, form_client):
    make_user(email="taken@example.com")
    response = form_client.post("/register", data={"email": "taken@example.com", "password": "another-pass",
                                                   "confirm": "another-pass"})
    assert response.status_code == 400 and "exists" in response.get_data(as_text=True)
    assert db.session.query(User).count() == 1


def test_register_rejects_short_or_mismatched_passwords(ctx, form_client):
    assert form_client.post("/register", data={"email": "a@example.com", "password": "short", "confirm": "short"}).status_code == 400
    assert form_client.post("/register", data={"email": "a@example.com", "password": "long-enough-1",
                                               "confirm": "long-enough-2"}).status_code == 400
    assert db.session.query(User).count() == 0


def test_wrong_password_is_refused(ctx, form_client):
    user = make_user()
    response = form_client.post("/login", data={"email": user.email, "password": "wrong password"})
    assert response.status_code == 400 and "do not match" in response.get_data(as_text=True)
    assert form_client.get("/profile").status_code == 302


@pytest.mark.parametrize("target, expected", [
    ("/orders/1", "/orders/1"),
    ("https://evil.example/", "/profile"),
    ("//evil.example/", "/profile"),
    ("/\\evil.example", "/profile"),
    ("javascript:alert(1)", "/profile"),
    ("/profile\r\nSet-Cookie: x=1", "/profile"),
    ("/\t\\evil.example", "/profile"),
])
def test_next_only_redirects_within_the_site(ctx, form_client, target, expected):
    user = make_user()
    response = form_client.post("/login", query_string={"next": target},
                                data={"email": user.email, "password": "correct horse battery"})
    assert response.headers["Location"] == expected


def test_profile_requires_login(ctx, client):
    response = client.get("/profile")
    assert response.status_code == 302 and response.headers["Location"].startswith("/login?next=")


def test_logout_needs_post_and_ends_the_session(ctx, form_client):
    login(form_client, make_user())
    assert form_client.get("/logout").status_code == 405
    form_client.post("/logout")
    assert form_client.get("/profile").status_code == 302


def test_order_page_shows_the_owner_only(app, ctx, form_client):
    owner, other = make_user(), make_user()
    with app.test_request_context():
        order, _ = checkout(make_ticket(), quantity=2, user=owner)
    login(form_client, owner)
    assert "Awaiting payment" in form_client.get(f"/orders/{order.id}").get_data(as_text=True)
    form_client.post("/logout")
    login(form_client, other)
    assert form_client.get(f"/orders/{order.id}").status_code == 404
    assert f"order-{order.id}" not in form_client.get("/profile").get_data(as_text=True)


def test_guest_orders_are_nobodys_order_page(app, ctx, form_client):
    with app.test_request_context():
        order, _ = checkout(make_ticket())
    login(form_client, make_user())
    assert form_client.get(f"/orders/{order.id}").status_code == 404
