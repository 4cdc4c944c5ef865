"""Absolute URLs for links that leave the shop (payment pages, emails)."""
from flask import url_for


def external_url(endpoint, **values):
    return url_for(endpoint, _external=True, **values)
