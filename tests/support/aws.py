"""AWS for the tests: moto's server on a loopback port, spoken to by real boto3 over HTTP.

A pytest plugin (``pytest_plugins`` in ``tests/conftest.py``): tests ask for ``aws``, ``moto_server``
or ``running_poller`` by name. The ``aws`` fixture empties moto and points this process's boto3
chain at it through the environment (``AWS_ENDPOINT_URL``, dummy credentials), exactly as an
operator would; ``shop_env(aws=aws, queue_url=…)`` gives a shop the same settings.
"""
import contextlib
import copy
import json
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import boto3
import pytest
from moto.server import ThreadedMotoServer

from shop.delivery.sqs_poller import SqsPoller

REGION = "us-east-1"
STRIPE_SOURCE = "aws.partner/stripe.com/ed_test_61ShopTestDestination"
FIXTURES = Path(__file__).parent / "fixtures" / "eventbridge"


@pytest.fixture(scope="session")
def moto_server():
    """moto in server mode on a free loopback port, for the whole run; yields its URL."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def aws(moto_server, monkeypatch):
    """An empty moto, with this process's AWS settings pointing at it."""
    urllib.request.urlopen(urllib.request.Request(f"{moto_server}/moto-api/reset", method="POST")).close()
    aws = Aws(moto_server)
    for name, value in aws.environment.items():
        monkeypatch.setenv(name, value)
    return aws.connect()


@pytest.fixture(scope="session")
def running_poller():
    """``with running_poller(app):`` the app's SQS poller runs in a thread until the block ends."""
    return _running_poller


class Aws:
    """boto3 clients on moto, and the few set-ups the tests repeat."""

    def __init__(self, endpoint_url):
        self.endpoint_url = endpoint_url
        self.environment = {"AWS_ENDPOINT_URL": endpoint_url, "AWS_ACCESS_KEY_ID": "testing",
                            "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": REGION, "AWS_REGION": REGION}

    def connect(self):
        """Create the clients (after the environment points boto3's chain at moto)."""
        self.sqs = boto3.client("sqs", region_name=REGION)
        self.events = boto3.client("events", region_name=REGION)
        return self

    def queue(self, name="shop-test-events", dead_letter_queue=False):
        """A fresh queue's URL; with ``dead_letter_queue`` it redrives to ``<name>-dlq``."""
        attributes = {}
        if dead_letter_queue:
            dlq = self.sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
            attributes["RedrivePolicy"] = json.dumps({"deadLetterTargetArn": self.arn(dlq), "maxReceiveCount": 5})
        return self.sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]

    def arn(self, queue_url):
        return self.sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]

    def messages_on(self, queue_url):
        """Messages on the queue, waiting or in flight."""
        attributes = self.sqs.get_queue_attributes(
            QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
        )["Attributes"]
        return int(attributes["ApproximateNumberOfMessages"]) + int(attributes["ApproximateNumberOfMessagesNotVisible"])

    def put_stripe_event(self, event, bus, source=STRIPE_SOURCE):
        """What Stripe's event destination does: one event on the partner bus, the Stripe event as detail."""
        reply = self.events.put_events(Entries=[{
            "Source": source, "DetailType": event["type"], "Detail": json.dumps(event), "EventBusName": bus,
            "Resources": [f"arn:aws:events:{REGION}::event-source/{source}"]}])
        assert reply["FailedEntryCount"] == 0, reply

    @staticmethod
    def envelope(event, source=STRIPE_SOURCE, fixture="checkout.session.completed.envelope.json"):
        """An SQS body as EventBridge writes it: the fixture's envelope around ``event``."""
        body = json.loads((FIXTURES / fixture).read_text())
        body.update({"id": str(uuid.uuid4()), "source": source,
                     "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                     "resources": [f"arn:aws:events:{REGION}::event-source/{source}"]})
        if event is not None:
            body.update({"detail-type": event["type"], "detail": copy.deepcopy(event)})
        return json.dumps(body)


@contextlib.contextmanager
def _running_poller(app):
    stop = threading.Event()
    thread = threading.Thread(target=SqsPoller(app).run, args=(stop,), name="test-sqs-poller", daemon=True)
    thread.start()
    try:
        yield thread
    finally:
        stop.set()
        thread.join(timeout=app.config["SHOP_SQS_WAIT_SECONDS"] + 10)
        assert not thread.is_alive(), "the poller did not stop"
