"""A small Stripe-compatible HTTP server that tests run on loopback.

The real `stripe` library talks to it (`base_addresses={"api": fake.url}`), so the shop's payment code runs
unchanged. It covers what the shop uses: Checkout Sessions in payment mode, PaymentIntents, Charges and Refunds,
events signed like Stripe's webhooks, and a hosted payment page for browser tests. Objects are built from
Stripe-shaped fixtures in `fixtures/stripe/`; ids, amounts and times are filled in here.

Tests drive what a customer or the bank would do through Python controls (`complete`, `async_succeed`,
`async_fail`, `expire`, `refund`) and simulate outages with `fail_next` and `down`.
"""

import copy
import hashlib
import hmac
import html
import json
import re
import secrets
import string
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import NamedTuple

FIXTURES = Path(__file__).parent / "fixtures" / "stripe"

# Stripe lets a Checkout Session live between 30 minutes and 24 hours; 24 hours is the default.
MIN_SESSION_LIFETIME = 30 * 60
MAX_SESSION_LIFETIME = 24 * 60 * 60

REFUND_REASONS = ("duplicate", "fraudulent", "requested_by_customer")

# URL segment -> (store attribute, Stripe object name used in "No such ..." errors).
RESOURCES = {
    "checkout/sessions": ("sessions", "checkout.session"),
    "payment_intents": ("payment_intents", "payment_intent"),
    "charges": ("charges", "charge"),
    "refunds": ("refunds", "refund"),
}
# Id prefix -> store, so an expanded field can be resolved from the id it holds.
STORE_BY_PREFIX = {"cs_": "sessions", "pi_": "payment_intents", "ch_": "charges", "re_": "refunds"}
# Per object type, the fields that hold another object's id and so may be named in `expand`.
EXPANDABLE = {"checkout.session": {"payment_intent"}, "payment_intent": {"latest_charge"},
              "charge": {"payment_intent"}, "refund": {"charge", "payment_intent"}}
CURRENCY_SYMBOLS = {"usd": "$", "eur": "€", "gbp": "£"}


class ApiError(ValueError):
    """A Stripe error: the HTTP layer answers with it, test controls raise it (hence a ValueError)."""

    def __init__(self, status, message, type="invalid_request_error", code=None, param=None):
        super().__init__(message)
        self.status = status
        error = {"type": type, "message": message, "code": code, "param": param}
        self.body = {"error": {name: value for name, value in error.items() if value}}


class ApiRequest(NamedTuple):
    """One API call as the server received it (a tuple: `method, path, params, headers = request`)."""

    method: str
    path: str
    params: dict
    headers: dict


def parse_form(text):
    """Decode Stripe's form encoding, where brackets nest: `a[b][0][c]=1` -> {"a": {"b": [{"c": "1"}]}}.

    Values stay strings, as on the wire; `a[]=x` appends to a list.
    """
    root = {}
    for key, value in urllib.parse.parse_qsl(text, keep_blank_values=True):
        field, *path = key.replace("]", "").split("[")
        node = root
        for part in path:
            node = node.setdefault(field, {})
            field = part or str(len(node))
        node[field] = value
    return _listify(root)


def _listify(node, key=None):
    """Turn dicts keyed 0..n into lists; metadata keeps digit keys, they are the caller's own names."""
    if not isinstance(node, dict):
        return node
    node = {k: _listify(v, k) for k, v in node.items()}
    if node and key != "metadata" and all(k.isdigit() for k in node):
        return [node[k] for k in sorted(node, key=int)]
    return node


def _new_id(prefix, length=24):
    alphabet = string.ascii_letters + string.digits
    return prefix + "".join(secrets.choice(alphabet) for _ in range(length))


def _required(params, name, param=None):
    """Return a required parameter, or fail the way Stripe does, naming the full bracketed path."""
    value = params.get(name) if isinstance(params, dict) else None
    if value in (None, ""):
        param = param or name
        raise ApiError(400, f"Missing required param: {param}.", code="parameter_missing", param=param)
    return value


def _integer(value, param, minimum):
    """Form values arrive as strings; Stripe converts them where its schema says integer."""
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ApiError(400, f"Invalid integer: {value}", param=param) from None
    if number < minimum:
        message = "Invalid positive integer" if minimum else "Invalid non-negative integer"
        raise ApiError(400, message, param=param)
    return number


def _money(amount, currency):
    """Format minor units the way Stripe's messages do ("$20.00"); two-decimal currencies only."""
    symbol = CURRENCY_SYMBOLS.get(currency)
    return f"{symbol}{amount / 100:.2f}" if symbol else f"{amount / 100:.2f} {currency.upper()}"


def _redact(key):
    """Stripe echoes a wrong key with all but its prefix and last four characters hidden."""
    return key[:8] + "*" * (len(key) - 12) + key[-4:] if len(key) > 12 else "*" * len(key)


class FakeStripe:
    """A Stripe API stand-in on 127.0.0.1; its stores are plain dicts tests may read (under no lock)."""

    def __init__(self, api_key="sk_test_fake", webhook_url=None, webhook_secret=None):
        self.api_key = api_key
        self.webhook_url = webhook_url
        self.webhook_secret = webhook_secret
        self.url = None
        self.sessions, self.payment_intents, self.charges, self.refunds = {}, {}, {}, {}
        self.events = []
        self.requests = []
        self.deliveries = []  # (event id, HTTP status of the webhook POST, or None if it could not connect)
        self.down = False
        self.latency = 0.0  # seconds each API call takes, as Stripe's few hundred ms do (benchmarks)
        self._failures = []  # statuses the next API calls answer with, see fail_next()
        self._idempotent = {}  # Idempotency-Key -> (method, path, params, response body)
        self._checkout_inputs = {}  # session id -> what Stripe keeps but does not show on the session
        self._templates = {path.stem: json.loads(path.read_text()) for path in FIXTURES.glob("*.json")}
        self._lock = threading.Lock()
        self._server = self._thread = None

    def start(self):
        """Bind a free loopback port and serve in a daemon thread."""
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.fake = self
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-stripe", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    # ----- test controls: what the customer, the bank or the dashboard would do -----

    def complete(self, session_id, payment_status="paid"):
        """The customer pays on the hosted page: `paid` for cards, `unpaid` while a bank debit is pending."""
        return self._emit(lambda: self._complete(session_id, payment_status))

    def async_succeed(self, session_id):
        """A delayed payment method (e.g. SEPA debit) settles: the PaymentIntent succeeds and is charged."""
        return self._emit(lambda: self._settle(session_id, succeeded=True))

    def async_fail(self, session_id):
        """A delayed payment fails: Stripe detaches the payment method and the session stays complete/unpaid."""
        return self._emit(lambda: self._settle(session_id, succeeded=False))

    def expire(self, session_id):
        """The session times out (Stripe does this at `expires_at`); only an open session can expire."""
        return self._emit(lambda: self._expire(session_id))

    def refund(self, payment_intent_id, amount=None):
        """Refund from the dashboard, with the API's rules; returns the `charge.refunded` event."""
        params = {"payment_intent": payment_intent_id}
        if amount is not None:
            params["amount"] = amount
        return self._emit(lambda: self._create_refund(params)[1])

    def event(self, type, obj):
        """Wrap any object in an event, record it and deliver it (for event types the server never makes)."""
        return self._emit(lambda: self._event(type, obj))

    def sign(self, payload, secret=None, timestamp=None):
        """The `Stripe-Signature` header: an HMAC-SHA256 of "<timestamp>.<body>" keyed with the secret."""
        secret = secret or self.webhook_secret
        if not secret:
            raise ValueError("no webhook secret to sign with")
        if isinstance(payload, bytes):
            payload = payload.decode()
        timestamp = int(time.time()) if timestamp is None else timestamp
        digest = hmac.new(secret.encode(), f"{timestamp}.{payload}".encode(), hashlib.sha256).hexdigest()
        return f"t={timestamp},v1={digest}"

    def fail_next(self, n=1, status=500):
        """Answer the next n API calls with a Stripe `api_error` of this status, before any work is done."""
        with self._lock:
            self._failures.extend([status] * n)

    def _emit(self, change):
        """Make a state change and its event under the lock, then deliver the event outside it."""
        with self._lock:
            event = change()
        self._deliver([event])
        return event

    # ----- the API: one call in, (status, body, headers, events to deliver) out -----

    def _api(self, method, path, raw_params, headers):
        """Run one API call under the lock; returns None when `down`, so the handler drops the connection."""
        params = parse_form(raw_params)
        with self._lock:
            self.requests.append(ApiRequest(method, path, params, dict(headers.items())))
            if self.down:
                return None
            reply_headers = {"Request-Id": _new_id("req_", 14)}
            # Stripe ignores Idempotency-Key on GET: reading is idempotent anyway.
            key = headers.get("Idempotency-Key") if method == "POST" else None
            try:
                if self._failures:
                    raise ApiError(self._failures.pop(0), "Injected failure (FakeStripe.fail_next).", "api_error")
                self._authenticate(headers.get("Authorization"))
                if key in self._idempotent:
                    reply_headers["Idempotent-Replayed"] = "true"
                    return 200, self._replay(key, method, path, params), reply_headers, []
                request = {"id": reply_headers["Request-Id"], "idempotency_key": key}
                obj, events = self._route(method, path, params, request)
                body = self._expand(obj, params.get("expand") or [])
            except ApiError as error:
                return error.status, error.body, reply_headers, []
            # Stripe saves a result only once an endpoint has run; a request that failed validation may be
            # retried with the same key. Errors here are validation errors, so only successes are saved.
            if key:
                self._idempotent[key] = (method, path, params, body)
            return 200, body, reply_headers, events

    def _authenticate(self, authorization):
        scheme, _, key = (authorization or "").partition(" ")
        if scheme != "Bearer" or not key:
            raise ApiError(401, "You did not provide an API key. You need to provide your API key in the "
                                "Authorization header, using Bearer auth (e.g. 'Authorization: Bearer "
                                "YOUR_SECRET_KEY').")
        if key != self.api_key:
            raise ApiError(401, f"Invalid API Key provided: {_redact(key)}")

    def _replay(self, key, method, path, params):
        """Stripe replays the first response for a key, and refuses the key for any other request."""
        first_method, first_path, first_params, body = self._idempotent[key]
        if (first_method, first_path, first_params) != (method, path, params):
            raise ApiError(400, "Keys for idempotent requests can only be used with the same parameters they were "
                                f"first used with. Try using a key other than '{key}' if you meant to execute a "
                                "different request.", type="idempotency_error")
        return body

    def _route(self, method, path, params, request):
        """Dispatch to an endpoint; returns (object, events it produced)."""
        if (method, path) == ("POST", "/v1/checkout/sessions"):
            return self._create_session(params), []
        if (method, path) == ("GET", "/v1/checkout/sessions"):
            return self._list_sessions(params), []
        if (method, path) == ("POST", "/v1/refunds"):
            refund, event = self._create_refund(params, request)
            return refund, [event]
        match = re.fullmatch(r"/v1/checkout/sessions/([^/]+)/expire", path)
        if method == "POST" and match:
            event = self._expire(match[1], request)
            return self.sessions[match[1]], [event]
        match = re.fullmatch(r"/v1/(checkout/sessions|payment_intents|charges|refunds)/([^/]+)", path)
        if method == "GET" and match:
            return self._get(match[1], match[2]), []
        raise ApiError(404, f"Unrecognized request URL ({method}: {path}). Please see https://stripe.com/docs "
                            "or we can help at https://support.stripe.com/.")

    def _get(self, resource, object_id, param="id"):
        store, name = RESOURCES[resource]
        obj = getattr(self, store).get(object_id)
        if obj is None:
            raise ApiError(404, f"No such {name}: '{object_id}'", code="resource_missing", param=param)
        return obj

    def _expand(self, obj, paths):
        """Return a copy of obj with each `expand` path's ids replaced by the objects (`a.b` nests)."""
        obj = copy.deepcopy(obj)
        for path in [paths] if isinstance(paths, str) else paths:
            node = obj
            for field in path.split("."):
                if node is None:  # nothing to expand through a null field: Stripe leaves it null
                    break
                if not isinstance(node, dict) or field not in EXPANDABLE.get(node.get("object"), ()):
                    raise ApiError(400, f"This property cannot be expanded ({path}).", param="expand")
                if isinstance(node[field], str):
                    store = STORE_BY_PREFIX[node[field][:3]]
                    node[field] = copy.deepcopy(getattr(self, store)[node[field]])
                node = node[field]
        return obj

    # ----- Stripe's rules; callers hold the lock -----

    def _create_session(self, params):
        mode = _required(params, "mode")
        if mode != "payment":
            raise ApiError(400, f"This test server supports only mode=payment, not {mode}.", param="mode")
        success_url = _required(params, "success_url")
        items = _required(params, "line_items")
        if not isinstance(items, list):
            raise ApiError(400, "Invalid array", param="line_items")
        lines = []
        for i, item in enumerate(items):
            at = f"line_items[{i}]"
            price = _required(item, "price_data", f"{at}[price_data]")
            lines.append({
                "name": _required(price.get("product_data"), "name", f"{at}[price_data][product_data][name]"),
                "currency": _required(price, "currency", f"{at}[price_data][currency]").lower(),
                "unit_amount": _integer(_required(price, "unit_amount", f"{at}[price_data][unit_amount]"),
                                        f"{at}[price_data][unit_amount]", minimum=0),
                "quantity": _integer(_required(item, "quantity", f"{at}[quantity]"), f"{at}[quantity]", minimum=1),
            })
        # One session charges one amount in one currency, so every line item must share it.
        if len({line["currency"] for line in lines}) > 1:
            raise ApiError(400, "All line items must use the same currency.", param="line_items")
        now = int(time.time())
        expires_at = now + MAX_SESSION_LIFETIME
        if params.get("expires_at") not in (None, ""):
            expires_at = _integer(params["expires_at"], "expires_at", minimum=0)
            if expires_at < now + MIN_SESSION_LIFETIME:
                raise ApiError(400, "The `expires_at` timestamp must be at least 30 minutes from Checkout "
                                    "Session creation.", param="expires_at")
            if expires_at > now + MAX_SESSION_LIFETIME:
                raise ApiError(400, "The `expires_at` timestamp must be less than 24 hours from Checkout "
                                    "Session creation.", param="expires_at")
        session_id = _new_id("cs_test_", 58)
        total = sum(line["unit_amount"] * line["quantity"] for line in lines)
        session = self._template("checkout_session")
        session.update(
            id=session_id, created=now, expires_at=expires_at, currency=lines[0]["currency"],
            amount_subtotal=total, amount_total=total, success_url=success_url,
            cancel_url=params.get("cancel_url"), client_reference_id=params.get("client_reference_id"),
            customer_email=params.get("customer_email"), metadata=params.get("metadata") or {},
            customer_details=None,  # filled in when the customer pays
            url=f"{self.url}/c/pay/{session_id}",
        )
        self.sessions[session_id] = session
        # Stripe keeps line items and payment_intent_data out of the session object but uses them later.
        intent_data = params.get("payment_intent_data") or {}
        self._checkout_inputs[session_id] = {"lines": lines, "intent_metadata": intent_data.get("metadata") or {}}
        return session

    def _list_sessions(self, params):
        """Stripe lists newest first, `limit` (default 10) at a time, saying whether more remain."""
        limit = _integer(params.get("limit", 10), "limit", minimum=1)
        newest = list(reversed(self.sessions.values()))
        return {"object": "list", "data": newest[:limit], "has_more": len(newest) > limit,
                "url": "/v1/checkout/sessions"}

    def _complete(self, session_id, payment_status):
        if payment_status not in ("paid", "unpaid"):
            raise ValueError(f"payment_status must be 'paid' or 'unpaid', not {payment_status!r}")
        session = self._get("checkout/sessions", session_id)
        if session["status"] != "open":
            raise ApiError(400, f"Checkout Session {session_id} is {session['status']}; only an open one can be paid.")
        intent = self._template("payment_intent")
        intent_id = _new_id("pi_")
        intent.update(
            id=intent_id, created=int(time.time()), amount=session["amount_total"], currency=session["currency"],
            client_secret=f"{intent_id}_secret_{_new_id('', 25)}", payment_method=_new_id("pm_"),
            metadata=copy.deepcopy(self._checkout_inputs[session_id]["intent_metadata"]),
            receipt_email=session["customer_email"],
            status="processing",  # a delayed method stays here until async_succeed/async_fail
        )
        self.payment_intents[intent_id] = intent
        details = self._template("checkout_session")["customer_details"]
        details["email"] = session["customer_email"] or details["email"]
        # Once paid, the hosted page is gone: Stripe only shows `url` while the session is open.
        session.update(status="complete", payment_status=payment_status, payment_intent=intent_id,
                       customer_details=details, url=None)
        if payment_status == "paid":
            self._charge(intent)
        return self._event("checkout.session.completed", session)

    def _charge(self, intent):
        """Settle a PaymentIntent: it succeeds and its Charge (which inherits its metadata) is created."""
        charge = self._template("charge")
        charge_id = _new_id("ch_")
        charge.update(
            id=charge_id, created=int(time.time()), amount=intent["amount"], amount_captured=intent["amount"],
            currency=intent["currency"], payment_intent=intent["id"], payment_method=intent["payment_method"],
            metadata=copy.deepcopy(intent["metadata"]), balance_transaction=_new_id("txn_"),
            receipt_email=intent["receipt_email"], receipt_url=f"{self.url}/receipts/payment/{charge_id}",
        )
        charge["billing_details"]["email"] = intent["receipt_email"] or charge["billing_details"]["email"]
        charge["payment_method_details"]["card"]["amount_authorized"] = intent["amount"]
        charge["payment_method_details"]["card"]["overcapture"]["maximum_amount_capturable"] = intent["amount"]
        charge["refunds"]["url"] = f"/v1/charges/{charge_id}/refunds"
        self.charges[charge_id] = charge
        intent.update(status="succeeded", amount_received=intent["amount"], latest_charge=charge_id)

    def _settle(self, session_id, succeeded):
        """End a delayed payment; on failure Stripe detaches the payment method and the session stays unpaid."""
        session = self._get("checkout/sessions", session_id)
        intent = self.payment_intents.get(session["payment_intent"])
        if session["payment_status"] != "unpaid" or not intent or intent["status"] != "processing":
            raise ApiError(400, f"Checkout Session {session_id} is not waiting for a delayed payment.")
        if succeeded:
            self._charge(intent)
            session["payment_status"] = "paid"
            return self._event("checkout.session.async_payment_succeeded", session)
        intent.update(status="requires_payment_method", payment_method=None, last_payment_error={
            "code": "payment_intent_payment_attempt_failed", "type": "invalid_request_error",
            "message": "The latest payment attempt of this PaymentIntent has failed or been canceled.",
        })
        return self._event("checkout.session.async_payment_failed", session)

    def _expire(self, session_id, request=None):
        session = self._get("checkout/sessions", session_id)
        if session["status"] != "open":
            raise ApiError(400, "Only Checkout Sessions with a status of `open` can be expired.")
        session.update(status="expired", url=None)
        return self._event("checkout.session.expired", session, request)

    def _create_refund(self, params, request=None):
        """Refund all or part of what remains on a charge; returns (refund, charge.refunded event)."""
        charge = self._refundable_charge(params)
        remaining = charge["amount"] - charge["amount_refunded"]
        if remaining <= 0:
            raise ApiError(400, f"Charge {charge['id']} has already been refunded.", code="charge_already_refunded")
        amount = remaining
        if params.get("amount") not in (None, ""):
            amount = _integer(params["amount"], "amount", minimum=1)
        if amount > remaining:
            raise ApiError(400, f"Refund amount ({_money(amount, charge['currency'])}) is greater than unrefunded "
                                f"amount on charge ({_money(remaining, charge['currency'])})", param="amount")
        reason = params.get("reason") or None
        if reason and reason not in REFUND_REASONS:
            raise ApiError(400, f"Invalid reason: must be one of {', '.join(REFUND_REASONS)}", param="reason")
        refund = self._template("refund")
        refund.update(
            id=_new_id("re_"), created=int(time.time()), amount=amount, currency=charge["currency"],
            charge=charge["id"], payment_intent=charge["payment_intent"], payment_method=charge["payment_method"],
            metadata=params.get("metadata") or {}, reason=reason, balance_transaction=_new_id("txn_"),
        )
        self.refunds[refund["id"]] = refund
        charge["amount_refunded"] += amount
        charge["refunded"] = charge["amount_refunded"] == charge["amount"]  # true only once fully refunded
        charge["refunds"]["data"].insert(0, copy.deepcopy(refund))  # Stripe lists newest first
        return refund, self._event("charge.refunded", charge, request)

    def _refundable_charge(self, params):
        if params.get("charge"):
            return self._get("charges", params["charge"], param="charge")
        if params.get("payment_intent"):
            intent = self._get("payment_intents", params["payment_intent"], param="payment_intent")
            if intent["status"] != "succeeded":
                raise ApiError(400, f"This PaymentIntent ({intent['id']}) does not have a successful charge to "
                                    "refund.", param="payment_intent")
            return self.charges[intent["latest_charge"]]
        raise ApiError(400, "One of the following params should be provided for this method: charge, "
                            "payment_intent.", code="parameter_missing")

    def _event(self, type, obj, request=None):
        """Record a snapshot event; `request` names the API call that caused it (null for dashboard actions)."""
        event = self._template("event")
        event.update(
            id=_new_id("evt_"), created=int(time.time()), type=type, data={"object": copy.deepcopy(obj)},
            pending_webhooks=1 if self.webhook_url else 0,
            request=request or {"id": None, "idempotency_key": None},
        )
        self.events.append(event)
        return event

    def _template(self, name):
        return copy.deepcopy(self._templates[name])

    # ----- outside the lock: webhooks and the hosted page -----

    def _deliver(self, events):
        """POST each event, signed, to the webhook URL; failures are only recorded, as Stripe would retry.

        Runs without the lock so the receiving app can call back into this server while handling it.
        """
        if not (self.webhook_url and self.webhook_secret):
            return
        for event in events:
            payload = json.dumps(event, indent=2)
            request = urllib.request.Request(self.webhook_url, data=payload.encode(), method="POST", headers={
                "Content-Type": "application/json; charset=utf-8",
                "Stripe-Signature": self.sign(payload),
                "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
            })
            try:
                with _direct.open(request, timeout=10) as response:
                    status = response.status
            except urllib.error.HTTPError as error:
                status = error.code
            except OSError:
                status = None
            with self._lock:
                self.deliveries.append((event["id"], status))

    def _checkout_page(self, method, session_id):
        """The hosted page: GET shows the order; POST pays it like complete() and returns to success_url."""
        if method == "POST":
            try:
                self.complete(session_id)
            except ApiError as error:
                return 400, {}, _html("Payment not possible", f"<p>{html.escape(str(error))}</p>")
            location = self.sessions[session_id]["success_url"].replace("{CHECKOUT_SESSION_ID}", session_id)
            return 303, {"Location": location}, ""
        with self._lock:
            session = copy.deepcopy(self.sessions.get(session_id))
        if session is None:
            return 404, {}, _html("Not found", "<p>No such Checkout Session.</p>")
        if session["status"] != "open":
            return 200, {}, _html("Checkout", "<p>This Checkout Session is no longer active.</p>")
        currency = session["currency"]
        rows = "".join(
            f"<tr><td>{html.escape(line['name'])}</td><td>{line['quantity']}</td>"
            f"<td>{_money(line['unit_amount'] * line['quantity'], currency)}</td></tr>"
            for line in self._checkout_inputs[session_id]["lines"]
        )
        cancel = session["cancel_url"]
        body = (
            f"<table><tr><th>Item</th><th>Qty</th><th>Amount</th></tr>{rows}</table>"
            f"<p>Total: <strong id=\"total\">{_money(session['amount_total'], currency)}</strong></p>"
            "<form method=\"post\"><button type=\"submit\">Pay</button></form>"
            + (f"<a href=\"{html.escape(cancel)}\">Cancel</a>" if cancel else "")
        )
        return 200, {}, _html("Checkout", body)


def _html(title, body):
    return (f"<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title></head>"
            f"<body><h1>{title}</h1>{body}</body></html>")


# Webhooks go straight to the test's receiver, never through a proxy from the environment.
_direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # the default 5 drops connections when a benchmark opens many at once


class _Handler(BaseHTTPRequestHandler):
    """Routes each request to the FakeStripe that owns the server (`self.server.fake`)."""

    # Keep-alive, as api.stripe.com does: clients reuse one connection for many calls. Each answer
    # leaves in one write (buffered, no Nagle), or the client's delayed ACK would add 40 ms to each.
    protocol_version = "HTTP/1.1"
    wbufsize = 64 * 1024
    disable_nagle_algorithm = True

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def _dispatch(self, method):
        fake = self.server.fake
        path, _, query = self.path.partition("?")
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
        if path.startswith("/c/pay/"):
            status, headers, page = fake._checkout_page(method, path.removeprefix("/c/pay/"))
            return self._send(status, {"Content-Type": "text/html; charset=utf-8", **headers}, page)
        if fake.latency:
            time.sleep(fake.latency)
        answer = fake._api(method, path, body if method == "POST" else query, self.headers)
        if answer is None:  # `down`: drop the connection so the client sees a network failure
            self.close_connection = True
            return
        status, payload, headers, events = answer
        # Delivered before the response, so a test sees the webhook's effect when the call returns. (Real
        # Stripe may deliver before or after; the app must serve webhooks concurrently either way.)
        fake._deliver(events)
        self._send(status, {"Content-Type": "application/json", **headers}, json.dumps(payload, indent=2))

    def _send(self, status, headers, text):
        data = text.encode()
        self.send_response(status)
        for name, value in {**headers, "Content-Length": str(len(data))}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format, *args):
        """Keep test output quiet; `FakeStripe.requests` is the log."""


if __name__ == "__main__":
    # `python -m tests.support.stripe_server`: serve in a process of its own (the benchmark does), printing the URL.
    import sys
    server = FakeStripe(api_key=sys.argv[1] if len(sys.argv) > 1 else "sk_test_fake")
    server.latency = float(sys.argv[2]) if len(sys.argv) > 2 else 0.0
    server.start()
    print(server.url, flush=True)
    threading.Event().wait()
