from flask import abort, redirect, render_template

from ..payments import PaymentError, gateway
from ..services.fulfilment import handle_stripe_event
from . import bp


@bp.get("/pay/<session_id>")
def pay(session_id):
    try:
        session = gateway().retrieve_session(session_id)
    except PaymentError:
        abort(404)
    return render_template("sandbox/pay.html", session=session)


@bp.post("/pay/<session_id>")
def pay_submit(session_id):
    try:
        session = gateway().retrieve_session(session_id)
    except PaymentError:
        abort(404)
    try:
        event = gateway().complete_session(session_id)
    except PaymentError as exc:
        return render_template("sandbox/pay.html", session=session, error=str(exc)), 409
    # The same event handling a real Stripe webhook goes through.
    handle_stripe_event(event, "sandbox")
    session = event["data"]["object"]
    return redirect(session["success_url"].replace("{CHECKOUT_SESSION_ID}", session["id"]), code=303)
