"""Template helpers, registered once (CTFd's ``init_template_filters``): money, local dates, plurals,
QR codes, the order statuses as the enum, the one way a form carries its CSRF token, and the one way a
page loads a script file."""
from decimal import ROUND_HALF_UP, Decimal
from functools import lru_cache

import segno
from flask import url_for
from flask_wtf.csrf import generate_csrf
from markupsafe import Markup, escape

from .models.catalog import SaleState
from .models.orders import AdmissionState, OrderStatus
from .timezones import local_label

CENT = Decimal("0.01")


def money(amount, currency):
    """``20.00 USD``: exact Decimal arithmetic, never float (0.1 + 0.2 stays 0.30)."""
    if amount is None:
        return ""
    return f"{Decimal(amount).quantize(CENT, rounding=ROUND_HALF_UP)} {str(currency).upper()}"


def datetime_label(value, tz="UTC", with_weekday=True):
    """A stored (naive UTC) time as people read it in the zone ``tz``: ``Sat 01 Mar 2027, 19:30 UTC``."""
    return local_label(value, tz, with_weekday)


def local_datetime(value, event, with_weekday=True):
    """A stored time in ``event``'s own zone, with its abbreviation: ``{{ order.paid_at|local_datetime(event) }}``.

    ``event`` may also be a zone's name.
    """
    return local_label(value, getattr(event, "timezone", event), with_weekday)


def plural(count, singular, plural_form=None):
    """``1 ticket``, ``2 tickets``; ``plural_form`` for words that do not just take an s."""
    return f"{count} {singular if count == 1 else (plural_form or singular + 's')}"


@lru_cache(maxsize=1024)
def qr(code, large=False):
    """An inline SVG QR code for an admission code (segno: pure Python, no image libraries).

    ``large``: sized by the stylesheet (the ticket page, and print) instead of by the code's modules.
    """
    symbol = segno.make(code, micro=False, error="m")
    if large:
        return Markup(symbol.svg_inline(scale=1, border=4, omitsize=True, title=f"QR code of ticket {code}"))
    return Markup(symbol.svg_inline(scale=3, border=2, title=f"QR code of ticket {code}"))


def script_file(filename):
    """A ``<script src>`` for a file under ``static/``: the only way templates load script, so none is ever
    inline (the CSP allows scripts from the shop's own origin, never inline ones)."""
    return Markup(f'<script src="{escape(url_for("static", filename=filename))}" defer></script>')


def csrf_field():
    """The hidden CSRF input every form carries (Flask-WTF's token for this session)."""
    return Markup(f'<input type="hidden" name="csrf_token" value="{escape(generate_csrf())}">')


def init_template_helpers(app):
    """Register the filters and globals on ``app``'s Jinja environment."""
    app.jinja_env.filters.update(money=money, datetime=datetime_label, local_datetime=local_datetime, plural=plural,
                                 qr=qr)
    app.jinja_env.globals.update(OrderStatus=OrderStatus, AdmissionState=AdmissionState, SaleState=SaleState,
                                 csrf_field=csrf_field, script_file=script_file)
