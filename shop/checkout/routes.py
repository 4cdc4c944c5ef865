"""Buying: the checkout form's target, and the pages the payment provider sends the buyer back to."""
from datetime import timedelta

from flask import abort, current_app, jsonify, redirect, render_template, request, session, url_for
from flask_login import current_user
from itsdangerous import BadSignature, URLSafeTimedSerializer
from limits import parse_many
from werkzeug.datastructures import MultiDict

from ..catalog.forms import CheckoutForm, OrderForm
from ..catalog.routes import render_event
from ..errors import error_response
from ..extensions import csrf, db, limiter
from ..models import TicketOrder
from ..models.base import utcnow
from ..payments import PaymentUnavailable, gateway
from ..security import private_page, rate_limit
from ..services.checkout import (
    CheckoutRefused,
    CheckoutRequest,
    ReturnUrls,
    cancel_checkout,
    claim_provider_read,
    order_for_checkout,
    price_lines,
    start_checkout,
)
from ..services.fulfilment import fulfil_checkout
from ..services.holds import HOLD_GRACE
from ..urls import external_url
from . import bp

GUEST_ORDERS_KEPT = 5
# The success page reloads itself every few seconds while payment is confirmed, this many times at most.
SUCCESS_PAGE_REFRESHES = 20


def _cancel_signer():
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt="checkout-cancel")


def _cancel_token_lifetime():
    """A cancel link works as long as the hold it would cancel, and not after."""
    return (current_app.config["SHOP_HOLD_MINUTES"] + 1) * 60 + int(HOLD_GRACE.total_seconds())


def _discount_attempts(hit=False):
    """Wrong discount codes from one address are limited (``SHOP_LIMIT_DISCOUNT``), so codes cannot be guessed.

    Only refused codes count; True while this address may still try one.
    """
    if not current_app.config["RATELIMIT_ENABLED"]:
        return True
    items, key = parse_many(current_app.config["SHOP_LIMIT_DISCOUNT"]), request.remote_addr or "-"
    if hit:
        return all([limiter.limiter.hit(item, "discount-code", key) for item in items])
    return all(limiter.limiter.test(item, "discount-code", key) for item in items)


@bp.post("/events/<int:event_id>/tickets/<int:ticket_id>/checkout")
@csrf.exempt  # checked below for form posts; a JSON body cannot be sent cross-site without CORS
@rate_limit("SHOP_LIMIT_CHECKOUT")
def create(event_id, ticket_id):
    wants_json = request.is_json
    if wants_json:
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            return jsonify(error="The body must be a JSON object like {\"quantity\": 1, \"email\": \"…\"}."), 400
        form = CheckoutForm(formdata=MultiDict({k: str(v) for k, v in body.items() if v is not None}))
    else:
        if current_app.config.get("WTF_CSRF_ENABLED", True):
            csrf.protect()
        form = CheckoutForm()
    if not form.validate():
        field, messages = next(iter(form.errors.items()))
        return _refused(event_id, ticket_id, form, CheckoutRefused(messages[0], field=field), wants_json)
    if form.discount_code.data and not _discount_attempts():
        return error_response(429, "Too many discount codes were tried from here. Please wait a while.")
    req = CheckoutRequest(
        event_id=event_id, ticket_id=ticket_id, quantity=form.quantity.data,
        # Lower case, as accounts store it: the order look-up and a verified account find it by this address.
        email=form.email.data.strip().lower(),
        discount_code=form.discount_code.data or "", client_ip=request.remote_addr,
        user_id=current_user.id if current_user.is_authenticated else None)
    return _place(req, wants_json, lambda refused: _refused(event_id, ticket_id, form, refused, wants_json))


def _place(req, wants_json, refuse):
    """Start the checkout; answer with the payment page, or at once with the tickets of a free order."""
    urls = ReturnUrls(success=external_url(".success") + "?session_id={CHECKOUT_REF}",
                      cancel_for=lambda o: external_url(".cancel", order=o.id, token=_cancel_signer().dumps(o.id)))
    try:
        order, checkout_url = start_checkout(req, urls)
    except CheckoutRefused as refused:
        if refused.field == "discount_code":
            _discount_attempts(hit=True)
        return refuse(refused)
    # This browser paid for it: for a while, its success page may show the tickets (see _may_see_codes).
    session["guest_orders"] = [*session.get("guest_orders", [])[-(GUEST_ORDERS_KEPT - 1):], order.id]
    if wants_json:
        return jsonify(order_id=order.id, checkout_url=checkout_url, status=order.status), 201
    if checkout_url is None:  # free: paid already, nothing to pay anywhere
        # Post/redirect/get: reloading the page it lands on must not place the order again.
        return redirect(url_for(".order_placed", token=_placed_signer().dumps(order.id)), code=303)
    return redirect(checkout_url, code=303)


def _placed_signer():
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt="order-placed")


@bp.get("/checkout/placed/<token>")
@rate_limit("SHOP_LIMIT_SUCCESS_PAGE")
@private_page
def order_placed(token):
    """Where a free order lands: its status, and its tickets for the browser that placed it (as after paying)."""
    try:
        order_id = _placed_signer().loads(token, max_age=24 * 3600)
    except BadSignature:
        abort(404)
    order = db.session.get(TicketOrder, order_id) if isinstance(order_id, int) else None
    if order is None:
        abort(404)
    return render_template("checkout/success.html", order=order, show_codes=_may_see_codes(order), refresh_url=None)


@bp.post("/events/<int:event_id>/checkout")
@csrf.exempt  # checked below for form posts; a JSON body cannot be sent cross-site without CORS
@rate_limit("SHOP_LIMIT_CHECKOUT")
def create_order(event_id):
    """One order over several ticket types: form fields ``qty-<ticket_id>``, or JSON ``{"items": […], …}``.

    A form posted with its "Show price" button is priced and shown again, nothing held: the discount
    before paying, with no script.
    """
    wants_json = request.is_json
    if not wants_json and current_app.config.get("WTF_CSRF_ENABLED", True):
        csrf.protect()
    try:
        items, names, form = _order_input(wants_json)
    except CheckoutRefused as refused:
        return _order_refused(event_id, None, {}, refused, wants_json)
    quantities = dict(items)
    if not form.validate():
        field, messages = next(iter(form.errors.items()))
        return _order_refused(event_id, form, quantities, CheckoutRefused(messages[0], field=field), wants_json)
    if form.discount_code.data and not _discount_attempts():
        return error_response(429, "Too many discount codes were tried from here. Please wait a while.")
    req = CheckoutRequest(
        event_id=event_id, ticket_id=None, quantity=None, items=tuple(items), names=names,
        email=form.email.data.strip().lower(), discount_code=form.discount_code.data or "",
        client_ip=request.remote_addr, user_id=current_user.id if current_user.is_authenticated else None)
    if not wants_json and "preview" in request.form:
        return _preview(req, form, quantities)
    return _place(req, wants_json, lambda refused: _order_refused(event_id, form, quantities, refused, wants_json))


def _order_input(wants_json):
    """``([(ticket_id, quantity), …], OrderForm)`` from a JSON body or the event page's form; CheckoutRefused."""
    if wants_json:
        body = request.get_json(silent=True)
        raw_items = body.get("items") if isinstance(body, dict) else None
        if not isinstance(raw_items, list) or not all(
                isinstance(item, dict) and _is_count(item.get("ticket_id")) and _is_count(item.get("quantity"))
                for item in raw_items):
            raise CheckoutRefused('The body must be a JSON object like {"items": [{"ticket_id": 1, "quantity": 2}], '
                                  '"email": "…", "discount_code": ""}.', field="items")
        fields = {k: str(body[k]) for k in ("email", "discount_code") if body.get(k) is not None}
        names = {item["ticket_id"]: item["names"] for item in raw_items if isinstance(item.get("names"), list)}
        return ([(item["ticket_id"], item["quantity"]) for item in raw_items], names,
                OrderForm(formdata=MultiDict(fields)))
    items = []
    for name, value in request.form.items():
        if name.startswith("qty-"):
            ticket_id, value = name[4:], value.strip() or "0"
            if not (ticket_id.isdigit() and value.isdigit() and len(value) < 4 and len(ticket_id) < 10):
                raise CheckoutRefused("Quantities must be whole numbers.", field="quantity")
            items.append((int(ticket_id), int(value)))
    return items, _form_names(items), OrderForm()


def _form_names(items):
    """``{ticket_id: [names…]}`` from the fields ``name-<ticket_id>-<n>`` the priced page offers per ticket."""
    return {ticket_id: [request.form.get(f"name-{ticket_id}-{n}", "") for n in range(1, quantity + 1)]
            for ticket_id, quantity in items}


def _is_count(value):
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10**9


def _preview(req, form, quantities):
    """The event page again with the order priced (after the code), nothing held."""
    try:
        lines, discount = price_lines(req, for_preview=True)
    except CheckoutRefused as refused:
        if refused.field == "discount_code":
            _discount_attempts(hit=True)
        return render_event(req.event_id, order_form=form, quantities=quantities, message=refused.message,
                            status=refused.status)
    return render_event(req.event_id, order_form=form, quantities=quantities, preview=(lines, discount))


def _order_refused(event_id, form, quantities, refused, wants_json):
    return _answer_refusal(event_id, refused, wants_json, order_form=form, quantities=quantities)


def _refused(event_id, ticket_id, form, refused, wants_json):
    return _answer_refusal(event_id, refused, wants_json, failed_ticket_id=ticket_id, form=form)


def _answer_refusal(event_id, refused, wants_json, **page):
    """A refused checkout: JSON, a "try again" page for an outage or a cap, or the event page (``page``) saying why."""
    if wants_json:
        return jsonify(error=refused.message, field=refused.field), refused.status
    if refused.status in (429, 502, 503):
        return render_template("checkout/unavailable.html", message=refused.message, event_id=event_id), refused.status
    return render_event(event_id, message=refused.message, status=refused.status, **page)


@bp.get("/checkout/success")
@rate_limit("SHOP_LIMIT_SUCCESS_PAGE")
@private_page
def success():
    checkout_ref = request.args.get("session_id", "")
    if not gateway().is_checkout_ref(checkout_ref):
        abort(404)
    order = order_for_checkout(checkout_ref)
    if order is None:
        abort(404)  # not a checkout of ours: the provider is not asked about made-up references
    # Only unsettled orders are re-read, each at most every few seconds whoever asks.
    if order.state.holds_seats and claim_provider_read(order.id):
        try:
            fulfil_checkout(checkout_ref, "success_page")
        except PaymentUnavailable:
            pass  # the page shows the order as we have it; the event or the sweeper settles it
        order = db.session.get(TicketOrder, order.id, populate_existing=True)
    return render_template("checkout/success.html", order=order, show_codes=_may_see_codes(order),
                           refresh_url=_refresh_url(order, checkout_ref))


def _refresh_url(order, checkout_ref):
    """While the order waits for its payment the page reloads itself, a bounded number of times."""
    waited = request.args.get("wait", "0")
    waited = int(waited) if waited.isdigit() and len(waited) < 4 else 0
    if not order.state.holds_seats or waited >= SUCCESS_PAGE_REFRESHES:
        return None
    return url_for(".success", session_id=checkout_ref, wait=waited + 1)


def _may_see_codes(order):
    """The admission codes go to the order's logged-in owner, or to the browser that paid, for a while after."""
    if current_user.is_authenticated and (order.user_id == current_user.id or (
            # A guest order placed with the address of a verified account is that account's too.
            order.user_id is None and current_user.email_verified and order.email == current_user.email)):
        return True
    window = timedelta(minutes=current_app.config["SHOP_GUEST_TICKET_MINUTES"])
    return (order.id in session.get("guest_orders", []) and order.paid_at is not None
            and utcnow() - order.paid_at <= window)


def _order_from_cancel_token(token):
    """The order a cancel link names, while the link is valid (it ends with the hold); else None."""
    try:
        order_id = _cancel_signer().loads(token or "", max_age=_cancel_token_lifetime())
    except BadSignature:
        return None
    return db.session.get(TicketOrder, order_id) if isinstance(order_id, int) else None


@bp.get("/checkout/cancel")
@private_page
def cancel():
    """The provider's "back" link: say what cancelling means and ask; nothing changes on a GET."""
    token = request.args.get("token", "")
    order = _order_from_cancel_token(token)
    if order is None:
        return render_template("checkout/cancel.html", order=None), 404
    return render_template("checkout/cancel_confirm.html", order=order, token=token)


@bp.post("/checkout/cancel")
@private_page
def cancel_submit():
    order = _order_from_cancel_token(request.form.get("token", ""))
    if order is None:
        return render_template("checkout/cancel.html", order=None), 404
    return render_template("checkout/cancel.html", order=cancel_checkout(order.id))
