"""The sandbox's pay page, standing in for the provider's hosted checkout."""
from flask import abort, redirect, render_template

from ...services.fulfilment import fulfil_checkout
from .. import PaymentNotFound, PaymentRefused, gateway
from . import bp


def _checkout_or_404(ref):
    try:
        return gateway().checkout(ref)
    except PaymentNotFound:
        abort(404)


@bp.get("/pay/<ref>")
def pay(ref):
    return render_template("sandbox/pay.html", checkout=_checkout_or_404(ref))


@bp.post("/pay/<ref>")
def pay_submit(ref):
    checkout = _checkout_or_404(ref)
    try:
        gateway().pay(ref)
    except PaymentRefused as exc:
        return render_template("sandbox/pay.html", checkout=checkout, error=str(exc)), 409
    # Fulfilment re-reads the checkout, as it does for a real provider's event.
    fulfil_checkout(ref, "sandbox")
    return redirect(checkout.success_url, code=303)
