import re

from flask import abort, current_app, jsonify, redirect, render_template, request, url_for
from flask_login import current_user
from itsdangerous import BadSignature, URLSafeSerializer
from werkzeug.datastructures import MultiDict

from ..catalog.forms import CheckoutForm
from ..catalog.routes import render_event
from ..extensions import csrf
from ..models.orders import OrderStatus
from ..payments import PaymentUnavailable
from ..services.catalog import event_with_tickets
from ..services.checkout import CheckoutRefused, CheckoutRequest, cancel_checkout, order_for_session, start_checkout
from ..services.fulfilment import fulfil_checkout_session
from ..services.tickets import qr_svg
from . import bp

SESSION_ID = re.compile(r"^cs_[A-Za-z0-9_]{1,200}$")


def _cancel_signer():
    return URLSafeSerializer(current_app.config["SECRET_KEY"], salt="checkout-cancel")


@bp.post("/events/<int:event_id>/tickets/<int:ticket_id>/checkout")
@csrf.exempt  # checked below for form posts; a JSON body cannot be sent cross-site without CORS
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
    req = CheckoutRequest(
        event_id=event_id, ticket_id=ticket_id, quantity=form.quantity.data, email=form.email.data.strip(),
        discount_code=form.discount_code.data or "",
        user_id=current_user.id if current_user.is_authenticated else None)
    try:
        order, checkout_url = start_checkout(
            req, success_url=url_for(".success", _external=True) + "?session_id={CHECKOUT_SESSION_ID}",
            cancel_url_for=lambda o: url_for(".cancel", order=o.id, token=_cancel_signer().dumps(o.id), _external=True))
    except CheckoutRefused as refused:
        return _refused(event_id, ticket_id, form, refused, wants_json)
    if wants_json:
        return jsonify(order_id=order.id, checkout_url=checkout_url), 201
    return redirect(checkout_url, code=303)


def _refused(event_id, ticket_id, form, refused, wants_json):
    if wants_json:
        return jsonify(error=refused.message, field=refused.field), refused.status
    if refused.status == 502:
        return render_template("checkout/unavailable.html", message=refused.message, event_id=event_id), 502
    event = event_with_tickets(event_id)
    if event is None:
        abort(404)
    return render_event(event, failed_ticket_id=ticket_id, form=form, message=refused.message, status=refused.status)


@bp.get("/checkout/success")
def success():
    session_id = request.args.get("session_id", "")
    if not SESSION_ID.match(session_id):
        abort(404)
    order = order_for_session(session_id)
    if order is None:
        abort(404)  # not a session of ours: Stripe is not asked about made-up ids
    if order.state not in (OrderStatus.PAID, OrderStatus.REFUNDED):  # a late payment may have arrived
        try:
            # Stripe's advice: fulfil on the landing page too, so the buyer need not wait for the event.
            order = fulfil_checkout_session(session_id, "success_page") or order
        except PaymentUnavailable:
            pass  # the page shows the order as we have it; the event or the sweeper settles it
    return render_template("checkout/success.html", order=order, qr_svg=qr_svg)


@bp.get("/checkout/cancel")
def cancel():
    try:
        order_id = _cancel_signer().loads(request.args.get("token", ""))
    except BadSignature:
        abort(404)
    order = cancel_checkout(order_id)
    if order is None:
        abort(404)
    return render_template("checkout/cancel.html", order=order)
