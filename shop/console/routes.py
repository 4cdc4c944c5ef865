"""The console's pages. Admins run everything; door staff only check tickets in.

Anonymous visitors are sent to the login page (401 for JSON), buyers and door staff outside the
door get 403. Each route parses its input, calls one service and renders or redirects.
"""
import secrets
from functools import wraps

from flask import (
    Response,
    abort,
    current_app,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    stream_with_context,
    url_for,
)
from flask_login import current_user
from wtforms.fields.choices import SelectChoice

from ..errors import error_response, wants_json
from ..extensions import csrf, login_manager
from ..models import EventStatus, StaffRole
from ..ops.doctor import delivery_health
from ..payments import PaymentRefused, PaymentUnavailable
from ..security import private_page
from ..services import console as reads
from ..services import events as catalog
from ..services.audit import Actor, entries, record
from ..services.checkin import ScanResult, check_in, checkin_counts, undo_check_in, void_admission
from ..services.exports import attendees_csv, orders_csv
from ..services.mail import TicketsNotSendable
from ..services.mail import resend_tickets as queue_tickets_again
from ..services.refunds import RefundNotPossible, refund_order, refund_order_line
from ..services.staff import user_for_token
from ..services.transactions import transaction
from ..timezones import to_local, to_utc
from . import bp
from .charts import sales_chart
from .forms import (
    CheckinForm,
    ConfirmForm,
    DiscountForm,
    EventForm,
    QuotaForm,
    RefundForm,
    ResolveForm,
    TicketTypeForm,
)


def staff_only(*roles):
    """Let in the staff with one of ``roles``: the login page for anonymous visitors, 403 for anyone else."""
    def decorate(view):
        @wraps(view)
        def guarded(*args, **kwargs):
            if not current_user.is_authenticated:
                abort(401 if wants_json() else login_manager.unauthorized())
            if current_user.staff_role not in roles:
                abort(403)
            return view(*args, **kwargs)
        return private_page(guarded)
    return decorate


admin_only = staff_only(StaffRole.ADMIN)
door_staff = staff_only(StaffRole.ADMIN, StaffRole.DOOR)


def _actor():
    return Actor.of(current_user)


def _found(getter, row_id):
    try:
        return getter(row_id)
    except catalog.NotFound:
        abort(404)


def _event_or_404(event_id):
    return _found(catalog.get_event, event_id)


def _form_page(form, save, template, **page):
    """A console form's page: on a valid post, ``save()`` (it calls the service, flashes, and says where to go);
    otherwise, or when the service refuses (shown at its field), the form again with its errors (400)."""
    if form.validate_on_submit():
        try:
            return save()
        except catalog.CatalogError as error:
            _apply_error(form, error)
    return render_template(template, form=form, **page), 400 if form.errors else 200


def _apply_error(form, error):
    """Show a service's refusal on the form field it names, or above the form."""
    field = getattr(form, error.field, None) if error.field else None
    if field is not None:
        field.errors = [*field.errors, error.message]
    else:
        flash(error.message)


# The dashboard and events ------------------------------------------------------------------------

@bp.get("/")
@door_staff
def dashboard():
    if not current_user.is_admin:
        return render_template("console/door_home.html", events=reads.dashboard_events())
    return render_template("console/dashboard.html", events=reads.dashboard_events(),
                           chart=sales_chart(reads.sales_by_day(), "Tickets sold per day, last 30 days"),
                           attention=reads.attention_list(), health=delivery_health(), resolve_form=ResolveForm())


@bp.route("/events/new", methods=["GET", "POST"])
@admin_only
def new_event():
    form = EventForm()

    def save():
        zone = catalog.zone_name(form.timezone.data)
        event = catalog.create_event(title=form.title.data, venue=form.venue.data, timezone=zone,
                                     starts_at=to_utc(form.starts_at.data, zone),
                                     description=form.description.data,
                                     attendee_names=form.attendee_names.data, actor=_actor())
        flash(f"Created {event.title} as a draft. Add ticket types, then publish it.")
        return redirect(url_for(".event", event_id=event.id))

    return _form_page(form, save, "console/event_form.html", event=None)


@bp.get("/events/<int:event_id>")
@admin_only
def event(event_id):
    stats = reads.event_stats(event_id)
    if stats is None:
        abort(404)
    return render_template("console/event.html", stats=stats, event=stats.event, confirm=ConfirmForm(),
                           chart=sales_chart(reads.sales_by_day(event_id)))


@bp.route("/events/<int:event_id>/edit", methods=["GET", "POST"])
@admin_only
def edit_event(event_id):
    event = _event_or_404(event_id)
    form = EventForm(obj=event)
    if request.method == "GET":
        form.starts_at.data = _local(event.starts_at, event.timezone)

    def save():
        zone = catalog.zone_name(form.timezone.data or event.timezone)
        catalog.update_event(event_id, title=form.title.data, venue=form.venue.data, timezone=zone,
                             starts_at=to_utc(form.starts_at.data, zone), description=form.description.data,
                             attendee_names=form.attendee_names.data, actor=_actor())
        flash("Saved.")
        return redirect(url_for(".event", event_id=event_id))

    return _form_page(form, save, "console/event_form.html", event=event)


@bp.post("/events/<int:event_id>/publish")
@admin_only
def publish_event(event_id):
    return _set_status(event_id, EventStatus.PUBLISHED, "Published: the event is public and its tickets on sale.")


@bp.post("/events/<int:event_id>/unpublish")
@admin_only
def unpublish_event(event_id):
    return _set_status(event_id, EventStatus.DRAFT, "Back to draft: the event is hidden and not on sale.")


def _set_status(event_id, status, message):
    _event_or_404(event_id)
    if ConfirmForm().validate_on_submit():
        catalog.set_event_status(event_id, status, actor=_actor())
        flash(message)
    return redirect(url_for(".event", event_id=event_id))


@bp.route("/events/<int:event_id>/tickets/new", methods=["GET", "POST"])
@admin_only
def new_ticket_type(event_id):
    event = _event_or_404(event_id)
    form = TicketTypeForm()

    def save():
        catalog.add_ticket_type(event_id, actor=_actor(), **_ticket_values(form, event.timezone))
        flash(f"Added {form.name.data}.")
        return redirect(url_for(".event", event_id=event_id))

    return _form_page(form, save, "console/ticket_form.html", event=event, ticket=None)


def _ticket_values(form, zone):
    return {"name": form.name.data, "price": form.price.data, "capacity": form.capacity.data,
            "on_sale_from": _utc(form.on_sale_from.data, zone), "on_sale_until": _utc(form.on_sale_until.data, zone),
            "hidden": form.hidden.data}


def _utc(value, zone):
    """A time as typed in ``zone`` (or with its own offset) as stored: naive UTC; None stays None."""
    return to_utc(value, zone) if value is not None else None


def _local(value, zone):
    """A stored time as the form shows it: naive, in ``zone``."""
    return to_local(value, zone).replace(tzinfo=None) if value is not None else None


@bp.route("/tickets/<int:ticket_id>/edit", methods=["GET", "POST"])
@admin_only
def edit_ticket_type(ticket_id):
    ticket = _found(catalog.get_ticket_type, ticket_id)
    form = TicketTypeForm(obj=ticket)
    zone = ticket.event.timezone
    if request.method == "GET":
        form.on_sale_from.data = _local(ticket.on_sale_from, zone)
        form.on_sale_until.data = _local(ticket.on_sale_until, zone)

    def save():
        catalog.update_ticket_type(ticket_id, actor=_actor(), **_ticket_values(form, zone))
        flash(f"Saved {form.name.data}.")
        return redirect(url_for(".event", event_id=ticket.event_id))

    return _form_page(form, save, "console/ticket_form.html", event=ticket.event, ticket=ticket)


# Quotas: capacity shared by ticket types -------------------------------------------------------------

@bp.route("/events/<int:event_id>/quotas/new", methods=["GET", "POST"])
@admin_only
def new_quota(event_id):
    event = _event_or_404(event_id)
    form = QuotaForm()
    form.ticket_ids.choices = [SelectChoice(t.id, t.name) for t in event.ticket_types]

    def save():
        catalog.create_quota(event_id, name=form.name.data, capacity=form.capacity.data,
                             ticket_ids=form.ticket_ids.data or None, actor=_actor())
        flash(f"Added the quota {form.name.data}.")
        return redirect(url_for(".event", event_id=event_id))

    return _form_page(form, save, "console/quota_form.html", event=event, quota=None)


@bp.route("/quotas/<int:quota_id>/edit", methods=["GET", "POST"])
@admin_only
def edit_quota(quota_id):
    quota = _found(catalog.get_quota, quota_id)
    form = QuotaForm(obj=quota)
    del form.ticket_ids  # fixed when the quota was made

    def save():
        catalog.update_quota(quota_id, name=form.name.data, capacity=form.capacity.data, actor=_actor())
        flash(f"Saved the quota {form.name.data}.")
        return redirect(url_for(".event", event_id=quota.event_id))

    return _form_page(form, save, "console/quota_form.html", event=quota.event, quota=quota)


# Discount codes ----------------------------------------------------------------------------------

@bp.get("/discounts")
@admin_only
def discounts():
    return render_template("console/discounts.html", codes=reads.discount_codes())


def _discount_form(**kwargs):
    form = DiscountForm(**kwargs)
    form.event_id.choices = [SelectChoice(0, "Every event"),
                             *(SelectChoice(i, t) for i, t in reads.events_for_choice())]
    return form


def _discount_values(form):
    """The form's values for the service; CatalogError for an amount that is not one."""
    value = (form.value.data or "").strip()
    if form.kind.data == "percent":
        if not value.isdigit():
            raise catalog.CatalogError("a percentage is a whole number from 1 to 100", "value")
        kind = {"percent_off": int(value), "amount_off": None}
    else:
        kind = {"percent_off": None, "amount_off": catalog.money_value(value, "value")}
    return {**kind, "max_uses": form.max_uses.data, "event_id": form.event_id.data or None,
            "valid_from": _utc(form.valid_from.data, current_app.config["SHOP_TIMEZONE"]),
            "valid_until": _utc(form.valid_until.data, current_app.config["SHOP_TIMEZONE"])}


@bp.route("/discounts/new", methods=["GET", "POST"])
@admin_only
def new_discount():
    form = _discount_form()

    def save():
        discount = catalog.create_discount(code=form.code.data, actor=_actor(), **_discount_values(form))
        flash(f"Created {discount.code}.")
        return redirect(url_for(".discounts"))

    return _form_page(form, save, "console/discount_form.html", discount=None)


@bp.route("/discounts/<int:discount_id>/edit", methods=["GET", "POST"])
@admin_only
def edit_discount(discount_id):
    discount = _found(catalog.get_discount, discount_id)
    form = _discount_form(obj=discount, data=None if request.method == "POST" else {
        "kind": "percent" if discount.percent_off is not None else "amount",
        "value": str(discount.percent_off if discount.percent_off is not None else discount.amount_off),
        "event_id": discount.event_id or 0})
    form.code.data = discount.code  # the code itself never changes: orders and printed flyers name it
    if request.method == "GET":
        form.valid_from.data = _local(discount.valid_from, current_app.config["SHOP_TIMEZONE"])
        form.valid_until.data = _local(discount.valid_until, current_app.config["SHOP_TIMEZONE"])

    def save():
        catalog.update_discount(discount_id, actor=_actor(), **_discount_values(form))
        flash(f"Saved {discount.code}.")
        return redirect(url_for(".discounts"))

    return _form_page(form, save, "console/discount_form.html", discount=discount)


# Orders ------------------------------------------------------------------------------------------

@bp.get("/orders")
@admin_only
def orders():
    query = request.args.get("q", "").strip()[:255]
    return render_template("console/orders.html", query=query, orders=reads.find_orders(query) if query else None)


def _refund_form(order, **kwargs):
    form = RefundForm(**kwargs)
    form.void_tickets.choices = [SelectChoice(a.id, a.code) for a in order.admissions if not a.void]
    if not form.request_key.data:
        form.request_key.data = secrets.token_hex(16)
    return form


@bp.get("/orders/<int:order_id>")
@admin_only
def order(order_id):
    story = reads.order_story(order_id)
    if story is None:
        abort(404)
    return _render_order(story)


def _render_order(story, refund_form=None, status=200):
    return render_template("console/order.html", story=story, order=story.order,
                           refund_form=refund_form or _refund_form(story.order, formdata=None),
                           confirm=ConfirmForm(), resolve_form=ResolveForm()), status


@bp.post("/orders/<int:order_id>/refund")
@admin_only
def refund(order_id):
    story = reads.order_story(order_id)
    if story is None:
        abort(404)
    form = _refund_form(story.order)
    if not form.validate_on_submit():
        return _render_order(story, form, 400)
    amount = (form.amount.data or "").strip() or None
    try:
        refund_order(order_id, form.reason.data or "refunded by the organizer", "console", amount=amount,
                     request_key=form.request_key.data if amount else None, actor=_actor())
    except (RefundNotPossible, PaymentRefused, PaymentUnavailable) as exc:
        form.amount.errors = [*form.amount.errors, str(exc)]
        return _render_order(reads.order_story(order_id), form, 409)
    voided = [a for a in form.void_tickets.data or [] if void_admission(order_id, a, _actor(), "refunded in part")]
    flash("Refund requested." + (f" {len(voided)} ticket(s) voided." if voided else ""))
    return redirect(url_for(".order", order_id=order_id), code=303)


@bp.post("/orders/<int:order_id>/lines/<int:item_id>/refund")
@admin_only
def refund_line(order_id, item_id):
    """Refund one line of an order: its amount, then its tickets void and its seats back on sale."""
    if reads.order_story(order_id) is None:
        abort(404)
    if ConfirmForm().validate_on_submit():
        try:
            refund_order_line(order_id, item_id, "line refunded by the organizer", "console", actor=_actor())
        except (RefundNotPossible, PaymentRefused, PaymentUnavailable) as exc:
            flash(f"Not refunded: {exc}")
        else:
            flash("The line is refunded: its tickets are void and its seats are on sale again.")
    return redirect(url_for(".order", order_id=order_id), code=303)


@bp.post("/orders/<int:order_id>/tickets/<int:admission_id>/void")
@admin_only
def void_ticket(order_id, admission_id):
    if ConfirmForm().validate_on_submit():
        if void_admission(order_id, admission_id, _actor()):
            flash("The ticket is void: it will be refused at the door.")
        else:
            flash("That ticket was void already, or is not this order's.")
    return redirect(url_for(".order", order_id=order_id), code=303)


@bp.post("/orders/<int:order_id>/resend")
@admin_only
def resend_tickets(order_id):
    if reads.order_story(order_id) is None:
        abort(404)
    if ConfirmForm().validate_on_submit():
        try:
            message_id = queue_tickets_again(order_id, _actor())
        except TicketsNotSendable as exc:
            flash(f"Nothing was sent: {exc}.")
        else:
            flash(f"The tickets will be emailed again (outbox message {message_id}).")
    return redirect(url_for(".order", order_id=order_id), code=303)


@bp.post("/orders/<int:order_id>/resolve")
@admin_only
def resolve(order_id):
    form = ResolveForm()
    if not form.validate_on_submit():
        flash(form.note.errors[0] if form.note.errors else "Say what was done.")
    elif reads.resolve_attention(order_id, form.note.data, _actor()):
        flash(f"Order #{order_id} is off the attention list.")
    else:
        flash(f"Order #{order_id} was not on the attention list.")
    back = url_for(".order", order_id=order_id) if request.form.get("back") == "order" else url_for(".dashboard")
    return redirect(back, code=303)


# Exports -----------------------------------------------------------------------------------------

def _csv(event_id, kind, chunks):
    _event_or_404(event_id)
    with transaction():
        record(_actor(), f"export.{kind}", "event", event_id)
    response = Response(stream_with_context(chunks(event_id)), mimetype="text/csv")
    response.headers["Content-Disposition"] = f'attachment; filename="event-{event_id}-{kind}.csv"'
    return response


@bp.get("/events/<int:event_id>/orders.csv")
@admin_only
def export_orders(event_id):
    return _csv(event_id, "orders", orders_csv)


@bp.get("/events/<int:event_id>/attendees.csv")
@admin_only
def export_attendees(event_id):
    return _csv(event_id, "attendees", attendees_csv)


@bp.get("/audit")
@admin_only
def audit():
    before = request.args.get("before", "")
    return render_template("console/audit.html",
                           entries=entries(before_id=int(before) if before.isdigit() and len(before) < 12 else None))


# The door ----------------------------------------------------------------------------------------

def _door_user():
    """The staff member at the door: by bearer token (scanner apps), else by session, whose posts carry the
    CSRF token (the page's form field, or the X-CSRFToken header of its script)."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        user = user_for_token(token.strip())
        if user is None or not user.may_check_in():
            abort(401)
        return user
    if not current_user.is_authenticated:
        abort(401 if wants_json() else login_manager.unauthorized())
    if not current_user.may_check_in():
        abort(403)
    if request.method == "POST" and current_app.config.get("WTF_CSRF_ENABLED", True):
        csrf.protect()
    return current_user._get_current_object()


def door(view):
    """Door staff or admins, by session or API token; never cached."""
    @wraps(view)
    def guarded(event_id, *args, **kwargs):
        user = _door_user()
        return view(_event_or_404(event_id), Actor.of(user), *args, **kwargs)
    return csrf.exempt(private_page(guarded))


def scan_message(scan, zone):
    """What the door is told, in one line; a time in the event's zone (``zone``)."""
    at = ""
    if scan.checked_in_at:
        local = to_local(scan.checked_in_at, zone)
        at = f"{local:%H:%M} {local.tzname()}"
    return {
        ScanResult.OK: f"Valid: checked in. {scan.ticket_type}" + (f", {scan.attendee_name}"
                                                                   if scan.attendee_name else ""),
        ScanResult.ALREADY_CHECKED_IN: f"Already checked in at {at}" + (f" by {scan.checked_in_by}"
                                                                         if scan.checked_in_by else ""),
        ScanResult.VOID: "Void: refunded or cancelled. Do not admit.",
        ScanResult.WRONG_EVENT: f"For another event: {scan.other_event}",
        ScanResult.UNKNOWN: "Unknown code: not a ticket of this shop.",
    }[scan.result]


@bp.route("/events/<int:event_id>/checkin", methods=["GET", "POST"])
@door
def checkin(event, actor):
    scan = None
    if request.method == "POST":
        if request.is_json:
            body = request.get_json(silent=True)
            text = body.get("code") if isinstance(body, dict) else None
        else:  # the page's form, without script; its CSRF token was checked in _door_user
            text = request.form.get("code")
        if not isinstance(text, str) or not text.strip():
            if request.is_json:
                return error_response(400, 'Send {"code": "…"}: the ticket code to check in.')
            flash("Type or scan a ticket code.")
            return redirect(url_for(".checkin", event_id=event.id), code=303)
        scan = check_in(event.id, text, actor)
    checked_in, expected = checkin_counts(event.id)
    message = scan and scan_message(scan, event.timezone)
    if request.is_json:
        return jsonify(scan.as_json() | {"message": message, "checked_in": checked_in,
                                         "expected": expected}), scan.result.http_status
    return render_template("console/checkin.html", event=event, scan=scan, message=message,
                           form=CheckinForm(formdata=None), checked_in=checked_in, expected=expected), \
        scan.result.http_status if scan else 200


@bp.post("/events/<int:event_id>/checkin/undo")
@door
def undo_checkin(event, actor):
    body = request.get_json(silent=True) if request.is_json else request.form
    text = body.get("code") if body is not None and hasattr(body, "get") else None
    if not isinstance(text, str) or not text.strip():
        return error_response(400, 'Send {"code": "…"}: the ticket whose check-in to undo.')
    undone = undo_check_in(event.id, text, actor)
    checked_in, expected = checkin_counts(event.id)
    if request.is_json:
        return jsonify(undone=undone, checked_in=checked_in, expected=expected), 200 if undone else 409
    flash("Check-in undone." if undone else "That ticket was not checked in here.")
    return redirect(url_for(".checkin", event_id=event.id), code=303)


@bp.get("/events/<int:event_id>/checkin/counts")
@door
def checkin_count(event, actor):
    checked_in, expected = checkin_counts(event.id)
    return jsonify(checked_in=checked_in, expected=expected)
