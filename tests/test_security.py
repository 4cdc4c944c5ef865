"""Hardening seen from outside: Host header, headers, cookies, proxies, sessions, rate limits, errors, body size."""
import ipaddress
import json
import re
import statistics
import time
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlsplit

import pytest
from flask import abort
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from werkzeug.test import Client

from shop.extensions import db
from shop.models import User
from shop.security import TrustedProxies
from shop.services.accounts import change_password, password_hashing_slot
from shop.urls import external_url
from tests.support.apps import app_from_environment
from tests.support.clients import AuthActions
from tests.support.factories import PASSWORD, Factories, OrderPlacer

make_user, make_ticket = Factories().user, Factories().ticket


def login(client, user, password=PASSWORD):
    return AuthActions(client).login(user, password)

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
PASSWORD = "correct horse battery"
HEALTH_TOKEN = "health-7c1e9a3f5b2d8e4a6c0f"
BASE = "https://tickets.example.com"


@pytest.fixture
def shop_with(app, shop_env):
    """``shop_with(**settings)``: another app on the test database, as a process started with those settings."""
    made = []

    def build(test_config=None, **env):
        config = {"TESTING": True, **(test_config or {})}
        made.append(app_from_environment(shop_env(**env), config))
        return made[-1]

    yield build
    for other in made:
        with other.app_context():
            db.engine.dispose()


# --- Host header --------------------------------------------------------------------------------------------------

FORGED_HOST_REQUESTS = [
    ("GET", "/", {}, False),
    ("GET", "/events/1", {}, False),
    ("GET", "/no/such/page", {}, False),
    ("GET", "/login", {"headers": {"Accept": "application/json"}}, True),
    ("POST", "/login", {"data": {"email": "a@example.com", "password": "x"}}, False),
    ("POST", "/register", {"data": {"email": "a@example.com"}}, False),
    ("POST", "/logout", {}, False),
    ("POST", "/webhooks/stripe", {"data": "{}", "content_type": "application/json"}, True),
    ("POST", "/events/1/tickets/1/checkout", {"json": {"quantity": 1, "email": "a@example.com"}}, True),
    ("GET", "/healthz", {}, True),
    ("GET", "/static/style.css", {}, False),
]


@pytest.mark.parametrize("method, path, options, as_json", FORGED_HOST_REQUESTS,
                         ids=[f"{m} {p}{' json' if j else ''}" for m, p, _, j in FORGED_HOST_REQUESTS])
def test_a_forged_host_gets_400_and_never_a_500(client, method, path, options, as_json):
    options = dict(options)
    headers = {"Host": "evil.example", **options.pop("headers", {})}

    response = client.open(path, method=method, headers=headers, **options)

    assert response.status_code == 400
    assert "evil.example" not in response.get_data(as_text=True)
    if as_json:
        assert response.json == {"error": "This site is not served under that name."}
    else:
        assert "This site is not served under that name." in response.get_data(as_text=True)
        assert "http://" not in response.get_data(as_text=True)  # no absolute link built from any host


def test_a_forged_host_with_a_logged_in_session_still_gets_the_plain_400(ctx, form_client):
    login(form_client, make_user())

    response = form_client.get("/profile", headers={"Host": "evil.example"})

    assert response.status_code == 400 and "Log out" not in response.get_data(as_text=True)


def test_the_configured_host_with_a_port_is_served(ctx, client):
    assert client.get("/", headers={"Host": "localhost:8080"}).status_code == 200


# --- Headers ------------------------------------------------------------------------------------------------------

def expected_csp(stripe_server):
    origin = "{0.scheme}://{0.netloc}".format(urlsplit(stripe_server.url))
    return (f"default-src 'self'; frame-ancestors 'none'; form-action 'self' {origin}; base-uri 'self'; "
            "object-src 'none'")


def test_security_headers_on_every_kind_of_page(app, ctx, form_client, stripe_server):
    user = make_user()
    ticket = make_ticket()
    order = OrderPlacer(app)(ticket, user=user)
    public = {"index": form_client.get("/"), "event": form_client.get(f"/events/{ticket.event_id}"),
              "not found": form_client.get("/no/such/page"), "healthz": form_client.get("/healthz"),
              "webhook json": form_client.post("/webhooks/stripe", data="{}", content_type="application/json",
                                               headers={"Stripe-Signature": "t=1,v1=forged"})}
    private = {"login": form_client.get("/login"), "register": form_client.get("/register")}
    login(form_client, user)
    private.update(profile=form_client.get("/profile"), order=form_client.get(f"/orders/{order.id}"))

    assert [public["not found"].status_code, public["webhook json"].status_code] == [404, 400]
    assert all(response.status_code == 200 for response in private.values())
    for name, response in {**public, **private}.items():
        assert response.headers["Content-Security-Policy"] == expected_csp(stripe_server), name
        assert response.headers["X-Content-Type-Options"] == "nosniff", name
        assert "Strict-Transport-Security" not in response.headers, name  # plain http here
    for name, response in public.items():
        assert response.headers["Referrer-Policy"] == "strict-origin-when-cross-origin", name
        assert "no-store" not in response.headers.get("Cache-Control", ""), name
    for name, response in private.items():
        assert response.headers["Referrer-Policy"] == "no-referrer", name
        assert response.headers["Cache-Control"] == "no-store", name


def test_the_sandbox_csp_lets_forms_post_to_the_shop_only(app, shop_with):
    sandbox = shop_with(STRIPE_SECRET_KEY="", STRIPE_WEBHOOK_SECRET="", STRIPE_API_BASE="", SHOP_PAYMENTS="sandbox")
    csp = sandbox.test_client().get("/login").headers["Content-Security-Policy"]
    assert "form-action 'self';" in csp


def test_real_stripe_checkout_is_the_only_other_form_target(app, shop_with):
    real = shop_with(STRIPE_API_BASE="")
    csp = real.test_client().get("/").headers["Content-Security-Policy"]
    assert "form-action 'self' https://checkout.stripe.com;" in csp


def test_templates_need_no_inline_script_or_style():
    """The CSP allows neither ('unsafe-inline' is never needed): no <script>, <style>, style= or on…= handler."""
    inline = re.compile(r"<script|<style|\sstyle\s*=|\son[a-z]+\s*=|javascript:", re.IGNORECASE)
    offenders = {str(path.relative_to(TEMPLATES)): inline.findall(path.read_text())
                 for path in TEMPLATES.rglob("*.html") if inline.search(path.read_text())}
    assert offenders == {}
    assert len(list(TEMPLATES.rglob("*.html"))) > 10  # the scan found the templates


# --- Cookies, https and proxies --------------------------------------------------------------------------------------

def session_cookie_flags(response):
    header = next(value for value in response.headers.getlist("Set-Cookie") if value.startswith("session="))
    return {part.strip().split("=")[0].lower() for part in header.split(";")[1:]}


def test_cookies_over_http_are_httponly_and_samesite_lax_but_not_secure(client):
    page = client.get("/login")
    flags = session_cookie_flags(page)
    assert {"httponly", "samesite", "path"} <= flags and "secure" not in flags
    assert "SameSite=Lax" in page.headers["Set-Cookie"]


def test_with_an_https_base_url_cookies_are_secure_and_https_gets_hsts(app, ctx, shop_with):
    shop = shop_with(SHOP_BASE_URL=BASE)
    browser = shop.test_client()
    user = make_user()

    page = browser.get("/login", base_url=BASE)

    assert {"secure", "httponly", "samesite"} <= session_cookie_flags(page)
    assert "SameSite=Lax" in page.headers["Set-Cookie"]
    assert page.headers["Strict-Transport-Security"] == "max-age=31536000"
    # A form from a no-referrer page posts without a Referer; over https the CSRF token alone must do.
    token = re.search(r'name="csrf_token" (?:type="hidden" )?value="([^"]+)"', page.get_data(as_text=True)).group(1)
    form = {"email": user.email, "password": PASSWORD, "csrf_token": token}
    posted = browser.post("/login", base_url=BASE, data=form)
    assert posted.status_code == 302 and posted.headers["Location"] == "/profile"


def test_hsts_only_over_https(app, shop_with):
    shop = shop_with(SHOP_BASE_URL=BASE)
    browser = shop.test_client()
    assert "Strict-Transport-Security" not in browser.get("/login", base_url="http://tickets.example.com").headers
    behind_our_proxy = browser.get("/login", base_url="http://tickets.example.com",
                                   headers={"X-Forwarded-Proto": "https"})
    assert behind_our_proxy.headers["Strict-Transport-Security"] == "max-age=31536000"
    from_elsewhere = browser.get("/login", base_url="http://tickets.example.com",
                                 headers={"X-Forwarded-Proto": "https"}, environ_base={"REMOTE_ADDR": "203.0.113.9"})
    assert "Strict-Transport-Security" not in from_elsewhere.headers


def echo_client(*networks):
    """The middleware in front of a WSGI app that answers with the address and scheme it was given."""
    def echo(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [f"{environ['REMOTE_ADDR']} {environ['wsgi.url_scheme']}".encode()]
    return Client(TrustedProxies(echo, [ipaddress.ip_network(n) for n in networks]))


@pytest.mark.parametrize("peer, forwarded_for, proto, seen", [
    ("127.0.0.1", "198.51.100.7", "https", "198.51.100.7 https"),
    ("127.0.0.1", "6.6.6.6, 198.51.100.7", "https", "198.51.100.7 https"),
    ("127.0.0.1", "198.51.100.7, 10.0.0.2", "http", "198.51.100.7 http"),
    ("127.0.0.1", "10.0.0.3, 10.0.0.2", "https", "10.0.0.3 https"),
    ("127.0.0.1", "not-an-address", "https", "127.0.0.1 https"),
    ("::ffff:127.0.0.1", "198.51.100.7", "https", "198.51.100.7 https"),
    ("203.0.113.9", "198.51.100.7", "https", "203.0.113.9 http"),
    ("10.0.0.2", "198.51.100.7", "nonsense", "198.51.100.7 http"),
], ids=["one-hop", "client-prepended-a-lie", "through-two-proxies", "all-trusted", "malformed", "ipv4-mapped",
        "untrusted-peer", "bad-proto"])
def test_forwarded_headers_count_only_from_trusted_proxies(peer, forwarded_for, proto, seen):
    client = echo_client("127.0.0.1/32", "10.0.0.0/8")
    response = client.get("/", environ_base={"REMOTE_ADDR": peer},
                          headers={"X-Forwarded-For": forwarded_for, "X-Forwarded-Proto": proto})
    assert response.get_data(as_text=True) == seen


# --- Sessions ------------------------------------------------------------------------------------------------------
# These tests hold no app context across requests: requests inside one share ``g``, where Flask-Login keeps
# the current user and Flask-WTF the CSRF token, and would hide what a fresh request sees.

def new_user(app):
    """A user made in a context of its own; its id and email stay usable after the context ends."""
    with app.app_context():
        user = make_user()
        return SimpleNamespace(id=user.id, email=user.email)


def test_login_rotates_the_csrf_token(app, csrf_client):
    user = new_user(app)
    before = csrf_client.token("/login")
    with csrf_client.session_transaction() as session:
        raw_before = session["csrf_token"]

    response = csrf_client.post("/login", data={"email": user.email, "password": PASSWORD, "csrf_token": before})

    assert response.status_code == 302
    after = csrf_client.token("/profile")
    with csrf_client.session_transaction() as session:
        assert session["csrf_token"] != raw_before
    assert csrf_client.post("/logout", data={"csrf_token": before}).status_code == 400  # planted before the login
    assert csrf_client.post("/logout", data={"csrf_token": after}).status_code == 302


def test_a_copy_of_the_session_cookie_stops_working_after_logout(app, form_client):
    login(form_client, new_user(app))
    copied = form_client.get_cookie("session").value
    assert form_client.get("/profile").status_code == 200

    form_client.post("/logout")

    thief = app.test_client()
    thief.set_cookie("session", copied)
    response = thief.get("/profile")
    assert response.status_code == 302 and response.headers["Location"].startswith("/login")


def test_changing_the_password_ends_older_sessions(app, form_client):
    user = new_user(app)
    login(form_client, user)
    other_device = app.test_client()
    other_device.set_cookie("session", form_client.get_cookie("session").value)
    assert other_device.get("/profile").status_code == 200

    with app.app_context():
        change_password(db.session.get(User, user.id), "a new passphrase")

    assert other_device.get("/profile").status_code == 302
    assert form_client.get("/profile").status_code == 302
    assert form_client.post("/login", data={"email": user.email, "password": PASSWORD}).status_code == 400
    login(form_client, user, password="a new passphrase")
    assert form_client.get("/profile").status_code == 200


def test_a_session_cookie_from_before_session_versions_is_not_honoured(app, client):
    user = new_user(app)
    with client.session_transaction() as session:
        session["_user_id"] = str(user.id)  # what Flask-Login stored before the id carried a version
        session["_fresh"] = True
    assert client.get("/profile").status_code == 302
    with client.session_transaction() as session:
        session["_user_id"] = f"{user.id}:1"  # the same user with the current version is let in
    assert client.get("/profile").status_code == 200


def test_login_takes_as_long_for_an_unknown_email_as_for_a_wrong_password(ctx, form_client):
    user = make_user()

    def seconds(email):
        started = time.perf_counter()
        assert form_client.post("/login", data={"email": email, "password": "not the password"}).status_code == 400
        return time.perf_counter() - started

    seconds("nobody@example.com")  # the first unknown email also makes the stand-in hash
    # Measured in turns, so a burst of load elsewhere on the machine slows both alike. Without the
    # stand-in hash an unknown email answers some 50 times faster; a third leaves room for noise.
    ratios = [seconds("nobody@example.com") / seconds(user.email) for _ in range(7)]
    assert statistics.median(ratios) > 0.33, ratios


def test_the_session_lifetime_is_bounded(app):
    assert app.permanent_session_lifetime.total_seconds() == 12 * 3600


# --- Rate limits and hashing ---------------------------------------------------------------------------------------

def test_the_login_attempt_past_the_limit_gets_429(app, ctx, shop_with):
    shop = shop_with({"WTF_CSRF_ENABLED": False}, RATELIMIT_ENABLED="true", SHOP_LIMIT_LOGIN="3 per minute")
    browser = shop.test_client()
    user = make_user()
    wrong = {"email": user.email, "password": "wrong password"}

    assert [browser.post("/login", data=wrong).status_code for _ in range(3)] == [400, 400, 400]
    refused = browser.post("/login", data={"email": user.email, "password": PASSWORD})

    assert refused.status_code == 429 and "Too many attempts" in refused.get_data(as_text=True)
    assert int(refused.headers["Retry-After"]) > 0
    as_json = browser.post("/login", data=wrong, headers={"Accept": "application/json"})
    assert as_json.status_code == 429 and set(as_json.json) == {"error"}
    assert browser.get("/login").status_code == 200  # reading the page is not an attempt
    # Keyed by the client's address: another buyer behind our proxy is not held back.
    other = browser.post("/login", data=wrong, headers={"X-Forwarded-For": "198.51.100.7"})
    assert other.status_code == 400
    # …and nobody picks a fresh key per request by sending X-Forwarded-For directly.
    from_outside = [browser.post("/login", data=wrong, headers={"X-Forwarded-For": f"198.51.100.{10 + i}"},
                                 environ_base={"REMOTE_ADDR": "203.0.113.9"}) for i in range(4)]
    assert [r.status_code for r in from_outside] == [400, 400, 400, 429]


def test_registering_past_the_limit_gets_429(app, ctx, shop_with):
    shop = shop_with({"WTF_CSRF_ENABLED": False}, RATELIMIT_ENABLED="true", SHOP_LIMIT_REGISTER="2 per minute")
    browser = shop.test_client()
    forms = [{"email": f"new{i}@example.com", "password": "long enough 1", "confirm": "long enough 1"}
             for i in range(3)]

    statuses = [browser.post("/register", data=form).status_code for form in forms]

    assert statuses == [302, 302, 429]
    assert db.session.query(User).count() == 2


def test_limits_are_off_when_ratelimit_enabled_is_false(ctx, form_client):
    user = make_user()
    statuses = {form_client.post("/login", data={"email": user.email, "password": "wrong"}).status_code
                for _ in range(15)}
    assert statuses == {400}


def test_a_login_waits_for_a_hashing_slot_and_gets_503_when_none_frees(app, ctx, shop_with):
    shop = shop_with({"WTF_CSRF_ENABLED": False}, SHOP_HASH_CONCURRENCY="1", SHOP_HASH_WAIT_SECONDS="1")
    browser = shop.test_client()
    user = make_user()
    page_view = browser.get("/")  # pages need no slot

    with shop.app_context(), password_hashing_slot():  # another request is hashing
        started = time.monotonic()
        busy = browser.post("/login", data={"email": user.email, "password": PASSWORD})
        waited = time.monotonic() - started
        assert browser.get("/").status_code == page_view.status_code == 200

    assert busy.status_code == 503 and "busy" in busy.get_data(as_text=True)
    assert busy.headers["Retry-After"] == "5" and 1 <= waited < 5
    assert browser.post("/login", data={"email": user.email, "password": PASSWORD}).status_code == 302


# --- Error answers -------------------------------------------------------------------------------------------------

def test_not_found_is_a_page_for_browsers_and_json_for_json_clients(client):
    page = client.get("/no/such/page")
    assert page.status_code == 404 and "There is nothing here." in page.get_data(as_text=True)
    assert page.mimetype == "text/html"
    as_json = client.get("/no/such/page", headers={"Accept": "application/json"})
    assert as_json.status_code == 404 and as_json.json == {"error": "There is nothing here."}
    webhook = client.get("/webhooks/nothing")
    assert webhook.status_code == 404 and webhook.json == {"error": "There is nothing here."}


def test_method_not_allowed_keeps_the_allow_header(client):
    response = client.get("/logout")
    assert response.status_code == 405 and "POST" in response.headers["Allow"]
    assert client.get("/webhooks/stripe").json == {"error": "This page does not take that kind of request."}


def test_a_csrf_failure_is_a_400_page(ctx, csrf_client):
    response = csrf_client.post("/login", data={"email": "a@example.com", "password": "x"})
    assert response.status_code == 400 and "Your form expired" in response.get_data(as_text=True)


def test_forbidden_and_unexpected_errors_are_pages_or_json(app, shop_with):
    shop = shop_with({"PROPAGATE_EXCEPTIONS": False})

    def broken_view():
        raise RuntimeError("a bug")

    def forbidden_view():
        abort(403)

    shop.add_url_rule("/broken", view_func=broken_view)
    shop.add_url_rule("/forbidden", view_func=forbidden_view)
    browser = shop.test_client()
    forbidden = browser.get("/forbidden")
    assert forbidden.status_code == 403 and "You may not see this page." in forbidden.get_data(as_text=True)
    as_json = browser.get("/forbidden", headers={"Accept": "application/json"})
    assert as_json.json == {"error": "You may not see this page."}
    page = browser.get("/broken")
    assert page.status_code == 500 and "Something went wrong on our side" in page.get_data(as_text=True)
    assert "a bug" not in page.get_data(as_text=True)
    assert page.headers["Content-Security-Policy"].startswith("default-src 'self'")
    assert browser.get("/broken", headers={"Accept": "application/json"}).json == {
        "error": "Something went wrong on our side. Please try again; if it keeps happening, tell us."}


def test_an_oversized_webhook_body_is_refused_with_413_json(ctx, client):
    response = client.post("/webhooks/stripe", data=b"{" + b" " * (5 * 1024 * 1024) + b"}",
                           content_type="application/json", headers={"Stripe-Signature": "t=1,v1=x"})
    assert response.status_code == 413 and response.json == {"error": "That request is too large."}


def test_an_oversized_form_is_refused_with_a_413_page(ctx, form_client):
    response = form_client.post("/login", data={"email": "a@example.com", "password": "x" * (2 * 1024 * 1024)})
    assert response.status_code == 413 and "That request is too large." in response.get_data(as_text=True)


# --- Health check --------------------------------------------------------------------------------------------------

def test_healthz_tells_the_public_only_ok_and_the_token_holder_the_report(app, ctx, shop_with):
    shop = shop_with(SHOP_HEALTH_TOKEN=HEALTH_TOKEN)
    browser = shop.test_client()

    public = browser.get("/healthz")
    wrong = browser.get("/healthz", headers={"Authorization": "Bearer not-the-token-at-all"})
    detailed = browser.get("/healthz", headers={"Authorization": f"Bearer {HEALTH_TOKEN}"})

    assert (public.status_code, public.json) == (200, {"status": "ok"})
    assert wrong.json == {"status": "ok"}
    assert detailed.status_code == 200
    assert set(detailed.json) == {"status", "database", "payments", "pending_past_hold", "last_delivery"}
    assert (detailed.json["database"], detailed.json["payments"]) == ("ok", "stripe")


def test_without_a_token_configured_nobody_gets_the_report(client):
    assert client.get("/healthz", headers={"Authorization": "Bearer "}).json == {"status": "ok"}


def test_healthz_of_a_database_that_refuses_says_unavailable_and_nothing_more(app, shop_with):
    shop = shop_with(database_url="mysql+pymysql://shopuser:hunter2@127.0.0.1:1/nowhere",
                     SHOP_HEALTH_TOKEN=HEALTH_TOKEN)
    browser = shop.test_client()

    public = browser.get("/healthz")
    detailed = browser.get("/healthz", headers={"Authorization": f"Bearer {HEALTH_TOKEN}"})

    assert (public.status_code, public.json) == (503, {"status": "unavailable"})
    assert (detailed.status_code, detailed.json) == (503, {"status": "unavailable", "database": "not answering"})
    page = browser.get("/")
    assert page.status_code == 503 and "try again in a moment" in page.get_data(as_text=True)
    for answer in (public, detailed, page):
        body = answer.get_data(as_text=True)
        assert not any(secret in body for secret in ("shopuser", "hunter2", "127.0.0.1", "nowhere")), body


# --- Absolute URLs -------------------------------------------------------------------------------------------------

def test_external_urls_come_from_shop_base_url_not_the_host_header(app, shop_with):
    shop = shop_with(SHOP_BASE_URL=BASE)
    with shop.test_request_context("/", base_url="http://tickets.example.com:8080"):
        assert external_url("catalog.event", event_id=3) == f"{BASE}/events/3"
        assert external_url("checkout.cancel", order=5, token="t") == f"{BASE}/checkout/cancel?order=5&token=t"
    with shop.app_context():  # outside a request: the CLI, background threads
        assert external_url("catalog.event", event_id=3) == f"{BASE}/events/3"


def test_external_urls_fall_back_to_the_request_in_the_embedded_default(tmp_path):
    demo = app_from_environment({"DATABASE_URL": f"sqlite:///{tmp_path}/shop.sqlite",
                                 "SECRET_KEY": "9b2f6c1e8a4d7f03c5e1b9a2d6f4c8e0", "SHOP_BASE_URL": "",
                                 "STRIPE_SECRET_KEY": "", "STRIPE_WEBHOOK_SECRET": "", "STRIPE_API_BASE": "",
                                 "SHOP_PAYMENTS": ""})
    with demo.test_request_context("/", base_url="http://192.168.1.20:5000"):
        assert external_url("catalog.event", event_id=3) == "http://192.168.1.20:5000/events/3"
    assert demo.test_client().get("/login", headers={"Host": "anything.local"}).status_code == 200


# --- Forms under arbitrary input -----------------------------------------------------------------------------------

text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=300)


@st.composite
def account_forms(draw):
    password = draw(text)
    return {"email": draw(st.one_of(st.emails(), text)), "password": password,
            "confirm": password if draw(st.booleans()) else draw(text)}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from(["/login", "/register"]), form=account_forms())
def test_any_login_or_register_form_is_answered_without_a_500(ctx, form_client, path, form):
    response = form_client.post(path, data=form)  # a crash would propagate here (TESTING)
    assert response.status_code in (302, 400), response.status_code
    if response.status_code == 302:
        form_client.post("/logout")


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.binary(max_size=2000))
def test_any_raw_login_body_is_answered_without_a_500(ctx, form_client, body):
    response = form_client.post("/login", data=body, content_type="application/x-www-form-urlencoded")
    assert response.status_code == 400
    response = form_client.post("/register", data=json.dumps({"raw": body.hex()}), content_type="application/json")
    assert response.status_code == 400
