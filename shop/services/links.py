"""Signed, expiring links in emails (itsdangerous): the order look-up, email verification, password reset.

Each purpose signs with its own salt, so a link made for one can never be used for another.
"""
from flask import current_app
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer


class LinkInvalid(Exception):
    """The link was altered, made for something else, or is not ours."""


class LinkExpired(Exception):
    """The link was ours but is older than its lifetime: ask for a new one (a sibling: a different answer)."""


def _serializer(purpose):
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt=f"shop-link-{purpose}")


def sign(purpose, value):
    """A URL-safe token carrying ``value`` (JSON-able) for ``purpose``, stamped with the time."""
    return _serializer(purpose).dumps(value)


def unsign(purpose, token, max_age_seconds):
    """The value a token carries; raises LinkExpired past ``max_age_seconds``, LinkInvalid when not ours."""
    try:
        return _serializer(purpose).loads(token or "", max_age=max_age_seconds)
    except SignatureExpired:
        raise LinkExpired(purpose) from None
    except BadSignature:
        raise LinkInvalid(purpose) from None
