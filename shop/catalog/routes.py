from decimal import Decimal

from flask import abort, render_template
from flask_login import current_user

from ..errors import error_response
from ..models.base import utcnow
from ..paging import BAD_PAGE, page_number
from ..services.catalog import upcoming_events, visible_event
from . import bp
from .forms import CheckoutForm, OrderForm


@bp.get("/")
def index():
    page = page_number()
    if page is None:
        return error_response(400, BAD_PAGE)
    events, has_next = upcoming_events(page)
    return render_template("catalog/index.html", events=events, page=page, has_next=has_next)


@bp.get("/events/<int:event_id>")
def event(event_id):
    return render_event(event_id)


def _viewer_is_staff():
    return current_user.is_authenticated and current_user.staff_role is not None


def render_event(event_id, failed_ticket_id=None, form=None, message=None, status=200, *, order_form=None,
                 quantities=None, preview=None):
    """The event page (a preview of a draft for staff, 404 for anyone else); after a refused checkout,
    that ticket type's form shows what was wrong.

    The one-order form (``order_form``, ``quantities`` per ticket id) comes back as the buyer filled
    it, with the refusal in ``message`` or the priced ``preview`` (``(lines, discount)``).
    """
    found = visible_event(event_id, staff=_viewer_is_staff())
    if found is None:
        abort(404)
    event, ticket_types = found
    email = current_user.email if current_user.is_authenticated else ""
    forms = {t.id: CheckoutForm(formdata=None, email=email, quantity=1) for t in ticket_types}
    if failed_ticket_id in forms and form is not None:
        forms[failed_ticket_id] = form
    order_message = message if failed_ticket_id is None else None
    if order_form is None:
        order_form = OrderForm(formdata=None, email=email)
    preview_total = sum((line.total for line in preview[0]), Decimal("0.00")) if preview else None
    return render_template("catalog/event.html", event=event, ticket_types=ticket_types, forms=forms, now=utcnow(),
                           failed_ticket_id=failed_ticket_id, message=message if failed_ticket_id else None,
                           order_form=order_form, quantities=quantities or {}, order_message=order_message,
                           preview=preview, preview_total=preview_total), status
