from flask import abort, current_app, flash, make_response, redirect, render_template, request, url_for

from ..models.base import utcnow
from ..security import private_page, rate_limit
from ..services.links import LinkExpired, LinkInvalid
from ..services.mail import send_order_lookup
from ..services.tickets import (
    NameNotChangeable,
    calendar_file,
    email_from_lookup,
    find_admission,
    group_by_event,
    orders_for_email,
    set_attendee_name,
)
from . import bp
from .forms import LookupForm

# One answer whether or not the address has orders, so the form does not tell who bought here.
LOOKUP_SENT = ("If we have orders for that address, we have sent it a link to them. "
               "It works for {hours} hours; check your spam folder if nothing arrives within a few minutes.")


@bp.get("/tickets/<code>")
@private_page
def ticket(code):
    """One admission: whoever has the code (from the email, the profile, the order page) sees its ticket."""
    admission = find_admission(code)
    if admission is None:
        abort(404, "There is no ticket with that code. Check the link in your email.")
    return render_template("tickets/ticket.html", admission=admission, order=admission.order,
                           event=admission.order.event)


@bp.post("/tickets/<code>/name")
@private_page
@rate_limit("SHOP_LIMIT_CHECKOUT")
def ticket_name(code):
    """Whoever holds the ticket names who will use it, until the event starts."""
    try:
        admission = set_attendee_name(code, request.form.get("attendee_name", ""))
    except NameNotChangeable as refused:
        admission = find_admission(code)
        if admission is None:
            abort(404)
        return render_template("tickets/ticket.html", admission=admission, order=admission.order,
                               event=admission.order.event, name_error=refused.args[0]), 400
    flash("Saved the name on this ticket.")
    if request.form.get("return_to") == "order":  # named from the order page, which lists every ticket
        return redirect(url_for("account.order", order_id=admission.order_id), code=303)
    return redirect(url_for(".ticket", code=admission.code), code=303)


@bp.get("/tickets/<code>/calendar.ics")
@private_page
def ticket_calendar(code):
    admission = find_admission(code)
    if admission is None:
        abort(404)
    return calendar_response(admission.order)


def calendar_response(order):
    """The order's ``.ics`` as a download."""
    response = make_response(calendar_file(order))
    response.headers["Content-Type"] = "text/calendar; charset=utf-8"
    response.headers["Content-Disposition"] = f'attachment; filename="order-{order.id}.ics"'
    return response


@bp.route("/orders/lookup", methods=["GET", "POST"])
@private_page
@rate_limit("SHOP_LIMIT_EMAIL_FORMS", methods=["POST"])
def lookup():
    """A guest asks for their orders: we mail a signed link to the address, and say the same whatever we found."""
    form = LookupForm()
    sent = False
    if form.validate_on_submit():
        send_order_lookup(form.email.data)
        sent = True
        form = LookupForm(formdata=None)  # the page says nothing about the address: not even which it was
    message = LOOKUP_SENT.format(hours=current_app.config["SHOP_LOOKUP_LINK_HOURS"]) if sent else None
    return render_template("tickets/lookup.html", form=form, sent=message), 400 if form.errors else 200


@bp.get("/orders/lookup/<token>")
@private_page
def lookup_orders(token):
    """The orders of the address a look-up (or confirmation) link was mailed to, while the link is fresh."""
    try:
        email = email_from_lookup(token)
    except LinkExpired:
        return render_template("tickets/lookup_refused.html", expired=True, form=LookupForm(formdata=None)), 410
    except LinkInvalid:
        return render_template("tickets/lookup_refused.html", expired=False, form=LookupForm(formdata=None)), 404
    upcoming, past = group_by_event(orders_for_email(email))
    return render_template("tickets/orders.html", email=email, upcoming=upcoming, past=past, now=utcnow())
