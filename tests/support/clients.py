"""What a buyer and Stripe do to the shop through its test client: the ``auth`` and ``webhook`` fixtures."""
import json
import re

from tests.support.apps import WEBHOOK_SECRET
from tests.support.factories import PASSWORD

CSRF_TOKEN = re.compile(r'name="csrf_token" (?:type="hidden" )?value="([^"]+)"')


def csrf_token(client, path):
    """The CSRF token of the form on the page at ``path``."""
    return CSRF_TOKEN.search(client.get(path).get_data(as_text=True)).group(1)


class AuthActions:
    """Log a user in and out through the forms (flaskr's ``AuthActions``); the client skips CSRF."""

    def __init__(self, client):
        self._client = client

    def login(self, user, password=PASSWORD):
        response = self._client.post("/login", data={"email": user.email, "password": password})
        assert response.status_code == 302, response.get_data(as_text=True)
        return response

    def logout(self):
        return self._client.post("/logout")


class WebhookSender:
    """POSTs Stripe events to the webhook route, signed as Stripe signs them."""

    def __init__(self, client, stripe_server):
        self._client = client
        self._stripe = stripe_server

    def post(self, event, *, secret=WEBHOOK_SECRET, timestamp=None, header=None, client=None):
        """POST ``event`` signed with ``secret`` at ``timestamp`` (or with the ``Stripe-Signature`` ``header``
        given); through ``client`` when the event is for another app or comes from another thread."""
        payload = json.dumps(event)
        if header is None:
            header = self._stripe.sign(payload, secret, timestamp)
        return (client or self._client).post("/webhooks/stripe", data=payload, content_type="application/json",
                                             headers={"Stripe-Signature": header})
