from urllib.parse import urlsplit

from flask import abort, flash, redirect, render_template, request, session, url_for
from flask_login import current_user, login_required, login_user, logout_user

from ..security import private_page, rate_limit
from ..services.accounts import EmailTaken, authenticate, end_sessions, order_of, orders_of, register_user
from . import bp
from .forms import LoginForm, RegisterForm

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
            return _start_session(user)
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
    return render_template("account/profile.html", orders=orders_of(current_user.id))


@bp.get("/orders/<int:order_id>")
@private_page
@login_required
def order(order_id):
    found = order_of(current_user.id, order_id)
    if found is None:
        abort(404)
    return render_template("account/order.html", order=found)
