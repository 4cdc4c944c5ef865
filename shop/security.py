"""Transport and browser security: the client's address behind our proxy, response headers, private pages, limits.

``init_app`` wraps the WSGI app in :class:`TrustedProxies` (so ``request.remote_addr`` and
``request.scheme`` are the client's, as our TLS proxy saw them) and adds the headers every
response carries. Views use :func:`private_page` and :func:`rate_limit`.
"""
import ipaddress
from functools import wraps

from flask import current_app, make_response, request

from .extensions import limiter

HSTS = "max-age=31536000"


class TrustedProxies:
    """WSGI middleware: believe ``X-Forwarded-For`` and ``X-Forwarded-Proto`` only from our own proxies.

    The client is the first address, walking ``X-Forwarded-For`` from the right, that is not one
    of ``networks``: a client can prepend anything it likes, but the hops our proxies appended are
    the rightmost. From a peer that is not a trusted proxy both headers are ignored, so nobody can
    pick their own address (and with it their rate-limit bucket) or claim https.
    """

    def __init__(self, app, networks):
        self.app = app
        self.networks = tuple(networks)

    def trusted(self, address):
        try:
            ip = ipaddress.ip_address(address.strip())
        except ValueError:
            return False
        if ip.version == 6 and ip.ipv4_mapped:
            ip = ip.ipv4_mapped
        return any(ip in network for network in self.networks)

    def client_address(self, peer, forwarded_for):
        """The client's address: ``peer`` itself unless trusted proxies forwarded the request for someone else."""
        client = peer
        for hop in reversed([part.strip() for part in forwarded_for.split(",")]):
            if not self.trusted(client):
                break
            try:
                ipaddress.ip_address(hop)
            except ValueError:
                break  # a malformed hop: the nearest trusted proxy is all we know
            client = hop
        return client

    def __call__(self, environ, start_response):
        peer = environ.get("REMOTE_ADDR") or ""
        if self.trusted(peer):
            forwarded_for = environ.get("HTTP_X_FORWARDED_FOR")
            if forwarded_for:
                environ["REMOTE_ADDR"] = self.client_address(peer, forwarded_for)
            proto = (environ.get("HTTP_X_FORWARDED_PROTO") or "").rsplit(",", 1)[-1].strip().lower()
            if proto in ("http", "https"):
                environ["wsgi.url_scheme"] = proto
        return self.app(environ, start_response)


def content_security_policy(checkout_origin):
    """No inline script or style anywhere, no framing, and forms post only to us (and on to the checkout page)."""
    form_action = "'self'" if checkout_origin == "'self'" else f"'self' {checkout_origin}"
    return (f"default-src 'self'; frame-ancestors 'none'; form-action {form_action}; base-uri 'self'; "
            "object-src 'none'")


def _add_security_headers(response):
    headers = response.headers
    headers.setdefault("Content-Security-Policy", current_app.config["SHOP_CONTENT_SECURITY_POLICY"])
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("Referrer-Policy", "strict-origin-when-cross-origin")
    if request.scheme == "https":
        headers.setdefault("Strict-Transport-Security", HSTS)
    return response


def private_page(view):
    """For pages with personal data or a password form: never cached, and their address never sent as a referrer."""
    @wraps(view)
    def private_view(*args, **kwargs):
        response = make_response(view(*args, **kwargs))
        response.headers["Cache-Control"] = "no-store"
        response.headers["Referrer-Policy"] = "no-referrer"
        return response
    return private_view


def rate_limit(setting, **options):
    """``limiter.limit`` with the limit read from the app's config ``setting`` (e.g. ``"SHOP_LIMIT_LOGIN"``).

    Keyed by the client's address (after :class:`TrustedProxies`). ``options`` go to Flask-Limiter,
    e.g. ``methods=["POST"]`` to count form posts but not page views.
    """
    return limiter.limit(lambda: current_app.config[setting], **options)


def init_app(app):
    """Trust forwarded headers from ``SHOP_TRUSTED_PROXIES`` only, and add the security headers to every response."""
    app.config.setdefault("SHOP_CONTENT_SECURITY_POLICY", content_security_policy(app.config["SHOP_CHECKOUT_ORIGIN"]))
    app.wsgi_app = TrustedProxies(app.wsgi_app, app.config["SHOP_TRUSTED_PROXIES"])
    app.after_request(_add_security_headers)
