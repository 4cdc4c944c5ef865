"""Accounts: registration, login with a safe ``next``, and who may see which order."""
import pytest

from shop.account.routes import REGISTER_REFUSED
from shop.extensions import db
from shop.models import User


def test_register_hashes_the_password_and_logs_in(ctx, form_client):
    response = form_client.post("/register", data={"email": "New@Example.com", "password": "s3cret-enough",
                                                   "confirm": "s3cret-enough"})
    assert response.status_code == 302 and response.headers["Location"] == "/profile"
    user = db.session.query(User).one()
    assert user.email == "new@example.com" and "s3cret-enough" not in user.password_hash
    assert user.check_password("s3cret-enough")
    assert form_client.get("/profile").status_code == 200


def test_register_twice_with_one_email_is_refused(ctx, form_client, make):
    make.user(email="taken@example.com")
    response = form_client.post("/register", data={"email": "taken@example.com", "password": "another-pass",
                                                   "confirm": "another-pass"})
    text = response.get_data(as_text=True)
    # Refused with the one neutral answer, which does not confirm that the email has an account.
    assert response.status_code == 400 and REGISTER_REFUSED in text and "exists" not in text
    assert db.session.query(User).count() == 1


def test_register_rejects_short_or_mismatched_passwords(ctx, form_client):
    assert form_client.post("/register", data={"email": "a@example.com", "password": "short",
                                               "confirm": "short"}).status_code == 400
    assert form_client.post("/register", data={"email": "a@example.com", "password": "long-enough-1",
                                               "confirm": "long-enough-2"}).status_code == 400
    assert db.session.query(User).count() == 0


def test_wrong_password_is_refused(ctx, form_client, make):
    user = make.user()
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
def test_next_only_redirects_within_the_site(ctx, form_client, make, target, expected):
    user = make.user()
    response = form_client.post("/login", query_string={"next": target},
                                data={"email": user.email, "password": "correct horse battery"})
    assert response.headers["Location"] == expected


def test_profile_requires_login(ctx, client):
    response = client.get("/profile")
    assert response.status_code == 302 and response.headers["Location"].startswith("/login?next=")


def test_logout_needs_post_and_ends_the_session(ctx, form_client, auth, make):
    auth.login(make.user())
    assert form_client.get("/logout").status_code == 405
    form_client.post("/logout")
    assert form_client.get("/profile").status_code == 302


def test_order_page_shows_the_owner_only(ctx, form_client, auth, make, place_order):
    owner, other = make.user(), make.user()
    order = place_order(make.ticket(), quantity=2, user=owner)
    auth.login(owner)
    assert "Awaiting payment" in form_client.get(f"/orders/{order.id}").get_data(as_text=True)
    auth.logout()
    auth.login(other)
    assert form_client.get(f"/orders/{order.id}").status_code == 404
    assert f"order-{order.id}" not in form_client.get("/profile").get_data(as_text=True)


def test_guest_orders_are_nobodys_order_page(ctx, form_client, auth, make, place_order):
    order = place_order(make.ticket())
    auth.login(make.user())
    assert form_client.get(f"/orders/{order.id}").status_code == 404
