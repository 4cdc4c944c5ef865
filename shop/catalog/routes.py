from flask import abort, render_template
from flask_login import current_user

from ..services.catalog import event_with_tickets, upcoming_events
from . import bp
from .forms import CheckoutForm


@bp.get("/")
def index():
    return render_template("catalog/index.html", events=upcoming_events())


@bp.get("/events/<int:event_id>")
def event(event_id):
    found = event_with_tickets(event_id)
    if found is None:
        abort(404)
    return render_event(found)


def render_event(event, failed_ticket_id=None, form=None, message=None, status=200):
    """The event page; after a refused checkout, that ticket type's form shows what was wrong."""
    email = current_user.email if current_user.is_authenticated else ""
    forms = {t.id: CheckoutForm(formdata=None, email=email, quantity=1) for t in event.ticket_types}
    if failed_ticket_id in forms and form is not None:
        forms[failed_ticket_id] = form
    return render_template("catalog/event.html", event=event, forms=forms,
                           failed_ticket_id=failed_ticket_id, message=message), status
