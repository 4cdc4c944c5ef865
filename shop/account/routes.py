from urllib.parse import urlsplit

from flask import abort, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required, login_user, logout_user

from ..services.accounts import EmailTaken, authenticate, order_of, orders_of, register_user
from . import bp
from .forms import LoginForm, RegisterForm


def _safe_next(target):
    """Only a path on this site: no scheme or host, no backslash (browsers read ``/\\host`` as a host),
    no control characters (a CR or LF cannot go into a Location header)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return None
    if any(ord(c) < 32 or ord(c) == 127 for c in target):
        return None
    parts = urlsplit(target)
    return None if parts.scheme or parts.netloc else target


@bp.route("/register", methods=["GET", "POST"])
def register():
    form = RegisterForm()
    if form.validate_on_submit():
        try:
            user = register_user(form.email.data, form.password.data)
        except EmailTaken:
            form.email.errors.append("An account with this email exists; log in instead.")
        else:
            login_user(user)
            return redirect(_safe_next(request.args.get("next")) or url_for("account.profile"))
    return render_template("account/register.html", form=form), 400 if form.errors else 200


@bp.route("/login", methods=["GET", "POST"])
def login():
    form = LoginForm()
    if form.validate_on_submit():
        user = authenticate(form.email.data, form.password.data)
        if user is not None:
            login_user(user)
            return redirect(_safe_next(request.args.get("next")) or url_for("account.profile"))
        form.password.errors.append("That email and password do not match an account.")
    return render_template("account/login.html", form=form), 400 if form.errors else 200


@bp.post("/logout")
def logout():
    logout_user()
    flash("You are logged out.")
    return redirect(url_for("catalog.index"))


@bp.get("/profile")
@login_required
def profile():
    return render_template("account/profile.html", orders=orders_of(current_user.id))


@bp.get("/orders/<int:order_id>")
@login_required
def order(order_id):
    found = order_of(current_user.id, order_id)
    if found is None:
        abort(404)
    return render_template("account/order.html", order=found)
