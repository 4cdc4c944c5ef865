"""Absolute URLs for what leaves the site (Stripe's success and cancel URLs, links in emails).

They are built from ``SHOP_BASE_URL``, never from the request's Host header, which a client
chooses: a link sent by email must not point wherever the request that caused it said.
"""
from urllib.parse import urlsplit

from flask import current_app, has_request_context, url_for


def external_url(endpoint, **values):
    """``SHOP_BASE_URL`` + the path of ``endpoint``; without a base URL (the embedded default), Flask's own
    ``url_for(..., _external=True)``. Works outside a request too (CLI, background threads) when the base URL is set.
    """
    base_url = current_app.config.get("SHOP_BASE_URL")
    if not base_url:
        return url_for(endpoint, _external=True, **values)
    if has_request_context():
        return base_url + url_for(endpoint, **values)
    parts = urlsplit(base_url)
    adapter = current_app.url_map.bind(parts.netloc, script_name=current_app.config["APPLICATION_ROOT"],
                                       url_scheme=parts.scheme)
    return base_url + adapter.build(endpoint, values)
