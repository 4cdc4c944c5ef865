from urllib.parse import urlsplit

from flask import abort, current_app, flash, redirect, render_template, request, session, url_for
from flask_login import current_user, login_required, login_user, logout_user

from ..errors import error_response
from ..models import OrderStatus
from ..models.base import utcnow
from ..paging import BAD_PAGE, page_number
from ..security import private_page, rate_limit
from ..services.accounts import (
    EmailTaken,
    authenticate,
    change_password,
    end_sessions,
    order_of,
    orders_of,
    register_user,
    verify_email,
)
from ..services.checkout import cancel_checkout
from ..services.links import LinkExpired, LinkInvalid
from ..services.mail import (
    TicketsNotSendable,
    resend_tickets,
    send_password_reset,
    send_verification,
    user_from_reset,
    user_from_verification,
)
from ..services.tickets import group_by_event
from ..tickets.routes import calendar_response
from . import bp
from .forms import EmailForm, LoginForm, NewPasswordForm, RegisterForm

# One answer whether or not the address has an account.
RESET_SENT = ("If an account has that address, we have sent it a link to choose a new password. "
              "It works for {minutes} minutes.")

# One answer whether or not the email has an account, so the form does not confirm who is a customer.
REGISTER_REFUSED = "We could not create an account with this email. If you already have one, log in instead."


def _safe_next(target):
    """Only a path on this site: no scheme or host, no backslash (browsers read ``/\\host`` as a host),
    no control characters (a CR or LF cannot go into a Location header)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return None
    if any(ord(c) < 32 or ord(c) == 127 for c in target):
        return None
    parts = urlsplit(target)
    return None if parts.scheme or parts.netloc else target


def _start_session(user):
    """Log ``user`` in on a fresh session: whatever the visitor's session held before (its CSRF token
    included) is dropped, so a token or cookie planted before the login is worth nothing after it."""
    session.clear()
    login_user(user)
    return redirect(_safe_next(request.args.get("next")) or url_for("account.profile"))


@bp.route("/register", methods=["GET", "POST"])
@private_page
@rate_limit("SHOP_LIMIT_REGISTER", methods=["POST"])
def register():
    form = RegisterForm()
    if form.validate_on_submit():
        try:
            user = register_user(form.email.data, form.password.data)
        except EmailTaken:
            form.email.errors.append(REGISTER_REFUSED)
        else:
            response = _start_session(user)
            flash(f"Welcome! We have sent a link to {user.email}: open it to confirm the address.")
            return response
    return render_template("account/register.html", form=form), 400 if form.errors else 200


@bp.route("/login", methods=["GET", "POST"])
@private_page
@rate_limit("SHOP_LIMIT_LOGIN", methods=["POST"])
def login():
    form = LoginForm()
    if form.validate_on_submit():
        user = authenticate(form.email.data, form.password.data)
        if user is not None:
            return _start_session(user)
        form.password.errors.append("That email and password do not match an account.")
    return render_template("account/login.html", form=form), 400 if form.errors else 200


@bp.post("/logout")
def logout():
    if current_user.is_authenticated:
        end_sessions(current_user)  # a copy of this session's cookie stops working too
    session.clear()
    logout_user()
    flash("You are logged out.")
    return redirect(url_for("catalog.index"))


@bp.get("/profile")
@private_page
@login_required
def profile():
    page = page_number()
    if page is None:
        return error_response(400, BAD_PAGE)
    orders, has_next = orders_of(current_user, page)
    upcoming, past = group_by_event(orders)
    return render_template("account/profile.html", upcoming=upcoming, past=past, now=utcnow(), page=page,
                           has_next=has_next)


def _own_order_or_404(order_id):
    found = order_of(current_user, order_id)
    if found is None:
        abort(404)
    return found


@bp.get("/orders/<int:order_id>")
@private_page
@login_required
def order(order_id):
    return render_template("account/order.html", order=_own_order_or_404(order_id), now=utcnow())


@bp.get("/orders/<int:order_id>/calendar.ics")
@private_page
@login_required
def order_calendar(order_id):
    return calendar_response(_own_order_or_404(order_id))


@bp.post("/orders/<int:order_id>/resend")
@private_page
@login_required
@rate_limit("SHOP_LIMIT_EMAIL_FORMS")
def resend(order_id):
    found = _own_order_or_404(order_id)
    try:
        resend_tickets(found.id)
    except TicketsNotSendable:
        flash("This order has no valid tickets to send.")
    else:
        flash(f"We are sending the tickets to {found.email} again.")
    return redirect(url_for(".order", order_id=order_id), code=303)


@bp.post("/orders/<int:order_id>/cancel")
@private_page
@login_required
def cancel(order_id):
    """Cancel a checkout waiting for payment from the profile: the seats go back on sale now."""
    found = _own_order_or_404(order_id)
    if found.state is not OrderStatus.PENDING:
        flash("Only an order waiting for payment can be cancelled here.")
        return redirect(url_for(".profile"), code=303)
    result = cancel_checkout(found.id)
    if result is not None and result.state is OrderStatus.PAID:
        flash("This order was paid before it could be cancelled: your tickets are valid.")
    elif result is not None and result.state.holds_seats:
        flash("We could not reach the payment provider to cancel it; the seats are released when the checkout ends.")
    else:
        flash("Checkout cancelled. Nothing was charged and the seats were released.")
    return redirect(url_for(".profile"), code=303)


@bp.get("/account/verify/<token>")
@private_page
def verify(token):
    """The link in the verification email: the address is the account owner's, so its guest orders join."""
    try:
        user = user_from_verification(token)
    except LinkExpired:
        return render_template("account/verify.html", outcome="expired"), 410
    except LinkInvalid:
        return render_template("account/verify.html", outcome="invalid"), 404
    joined = verify_email(user)
    return render_template("account/verify.html", outcome="verified", joined=joined)


@bp.post("/account/verify")
@private_page
@login_required
@rate_limit("SHOP_LIMIT_EMAIL_FORMS")
def resend_verification():
    if not current_user.email_verified:
        send_verification(current_user)
        flash(f"We have sent a new confirmation link to {current_user.email}.")
    return redirect(url_for(".profile"), code=303)


@bp.route("/password/reset", methods=["GET", "POST"])
@private_page
@rate_limit("SHOP_LIMIT_EMAIL_FORMS", methods=["POST"])
def forgot_password():
    form = EmailForm()
    sent = None
    if form.validate_on_submit():
        send_password_reset(form.email.data)
        sent = RESET_SENT.format(minutes=current_app.config["SHOP_RESET_LINK_MINUTES"])
        form = EmailForm(formdata=None)
    return render_template("account/forgot.html", form=form, sent=sent), 400 if form.errors else 200


@bp.route("/password/reset/<token>", methods=["GET", "POST"])
@private_page
@rate_limit("SHOP_LIMIT_EMAIL_FORMS", methods=["POST"])
def reset_password(token):
    """The link in the reset email: choose a new password; every older session ends, and the link with it."""
    try:
        user = user_from_reset(token)
    except LinkExpired:
        return render_template("account/reset.html", form=None, outcome="expired"), 410
    except LinkInvalid:
        return render_template("account/reset.html", form=None, outcome="invalid"), 404
    form = NewPasswordForm()
    if form.validate_on_submit():
        change_password(user, form.password.data)
        flash("Your password was changed. Please log in with the new one.")
        return redirect(url_for(".login"), code=303)
    return render_template("account/reset.html", form=form, outcome=None), 400 if form.errors else 200
