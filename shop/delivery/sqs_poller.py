"""The EventBridge inlet: drain the SQS queue that an EventBridge rule fills with Stripe's events.

Each message body is a whole EventBridge event whose ``detail`` is the Stripe event. The
poller hands that event to the same fulfilment function the webhook uses, and settles the
message by what happened:

* done, a duplicate, or not ours (a source we do not accept) → deleted, only once the
  event's transaction has committed;
* a later delivery can succeed (database or Stripe unreachable) → left on the queue and
  hidden for a growing while (SQS redelivers it then);
* it can never succeed (not JSON, no ``detail``, not a Stripe event) → left for the queue's
  dead-letter redrive, or deleted when the queue has no dead-letter queue.

A process that dies mid-message loses nothing: an undeleted message reappears once its
visibility timeout ends. It runs as a thread in each server process (``background.py``) or
in the foreground (``flask --app wsgi shop poll``).
"""
import enum
import json
import logging
import os
import signal
import threading
from dataclasses import dataclass

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from flask import current_app

from ..extensions import db
from ..payments import InvalidPayload, gateway
from ..services.event_log import RetryableError, receive_event

logger = logging.getLogger(__name__)

PATH = "eventbridge"
BATCH_SIZE = 10                 # SQS hands out at most 10 messages per receive
VISIBILITY_SECONDS = 60         # how long a received message stays hidden from other consumers…
HEARTBEAT_SECONDS = 20          # …renewed this often while the batch is still being worked on
MAX_BACKOFF_SECONDS = 15 * 60


class Action(str, enum.Enum):
    DELETE = "delete"   # processed, a duplicate, or not ours
    RETRY = "retry"     # a later delivery can succeed
    POISON = "poison"   # can never succeed: for the dead-letter queue


@dataclass(frozen=True)
class Verdict:
    """What became of one message, and so what to do with it on the queue."""
    action: Action
    reason: str
    event_id: str | None = None


def fulfil_queue_message(body):
    """Fulfil the Stripe event in one SQS message body and return the :class:`Verdict`; needs an app context.

    The source check comes first: a message from a source we do not accept is never
    fulfilled, whatever it holds. The envelope itself is unwrapped by the payment gateway
    (the stripe library's cloud-envelope support). Raises only on a bug.
    """
    try:
        envelope = json.loads(body)
    except (ValueError, RecursionError) as exc:
        return Verdict(Action.POISON, f"not JSON: {exc}")
    if not isinstance(envelope, dict):
        return Verdict(Action.POISON, "not an EventBridge event (not a JSON object)")
    source = envelope.get("source")
    if not source_allowed(source, current_app.config["SHOP_EVENTBRIDGE_SOURCES"]):
        return Verdict(Action.DELETE, f"not ours: source {str(source)[:200]!r} is not accepted")
    try:
        event = gateway().parse_envelope(body)
    except InvalidPayload as exc:
        return Verdict(Action.POISON, str(exc))
    try:
        outcome = receive_event(event, PATH)
    except RetryableError as exc:
        return Verdict(Action.RETRY, str(exc), event.id)
    return Verdict(Action.DELETE, outcome.label, event.id)


def source_allowed(source, allowed):
    """A source equal to one of the accepted ones, or under one of them as a path (``aws.partner/stripe.com/<id>``).

    The slash matters: ``aws.partner/stripe.comevil`` is someone else's source.
    """
    return isinstance(source, str) and any(source == a or source.startswith(a.rstrip("/") + "/") for a in allowed)


def sqs_client(region, wait_seconds):
    """An SQS client whose read timeout outlasts the long poll (else every idle receive would time out).

    The endpoint and credentials come from boto3's own chain (``AWS_ENDPOINT_URL``, ``AWS_PROFILE``, roles…).
    """
    config = Config(read_timeout=wait_seconds + 10, connect_timeout=5, retries={"mode": "standard", "max_attempts": 3})
    # A session per client: boto3's default session is not safe to share between threads.
    return boto3.session.Session(region_name=region).client("sqs", config=config)


def backoff_seconds(attempt):
    """2, 4, 8 … seconds, at most 15 minutes: a database outage costs a message few receives
    (each counts towards the dead-letter queue's maxReceiveCount)."""
    return min(MAX_BACKOFF_SECONDS, 2 ** max(1, attempt))


class SqsPoller:
    """Long-polls ``SQS_QUEUE_URL`` and settles each message in its own application context."""

    def __init__(self, app, wait_seconds=None):
        self.app = app
        self.queue_url = app.config["SQS_QUEUE_URL"]
        self.wait_seconds = app.config["SHOP_SQS_WAIT_SECONDS"] if wait_seconds is None else wait_seconds
        self.sqs = sqs_client(app.config["AWS_REGION"], self.wait_seconds)

    def run(self, stop):
        """Poll until ``stop`` is set; the batch in hand is finished first. Never raises."""
        logger.info("SQS poller started in pid %s on %s (long poll %s s)",
                    os.getpid(), self.queue_url, self.wait_seconds)
        failures = 0
        while not stop.is_set():
            try:
                self.poll_once()
                failures = 0
            except Exception as exc:  # noqa: BLE001 (the loop must outlive any error: SQS, network, a bug)
                failures += 1
                delay = min(60, backoff_seconds(failures))
                logger.error("SQS receive from %s failed (%s); trying again in %s s", self.queue_url, exc, delay)
                stop.wait(delay)
        logger.info("SQS poller stopped in pid %s", os.getpid())

    def poll_once(self):
        """Receive one batch (waiting up to the long-poll time) and settle every message in it.

        The messages done with are deleted together, in one call once the batch is worked through
        (one request to SQS instead of one per message). A process that dies before then loses
        nothing: those messages come back and their events are duplicates.
        """
        reply = self.sqs.receive_message(
            QueueUrl=self.queue_url, MaxNumberOfMessages=BATCH_SIZE, WaitTimeSeconds=self.wait_seconds,
            VisibilityTimeout=VISIBILITY_SECONDS, MessageSystemAttributeNames=["ApproximateReceiveCount"])
        messages = reply.get("Messages", [])
        done = []
        with VisibilityHeartbeat(self.sqs, self.queue_url, messages) as heartbeat:
            for message in messages:
                verdict = self._fulfil(message)
                heartbeat.settled(message)  # before any visibility change of ours, which it must not undo
                if self._settle(message, verdict):
                    done.append(message)
        self._delete(done)

    def _fulfil(self, message):
        with self.app.app_context():
            try:
                return fulfil_queue_message(message["Body"])
            except Exception:  # noqa: BLE001 (a bug must not stop the loop; the message stays for a retry)
                logger.exception("message %s: unexpected error, left on the queue", message["MessageId"])
                return Verdict(Action.RETRY, "unexpected error")
            finally:
                db.session.remove()  # each message gets a fresh session and returns its connection

    def _settle(self, message, verdict):
        """Log what became of the message and give a retry its backoff; True when it is to be deleted."""
        message_id, event = message["MessageId"], verdict.event_id or "-"
        if verdict.action is Action.DELETE:
            logger.info("message %s: event %s %s; deleted", message_id, event, verdict.reason)
            return True
        if verdict.action is Action.RETRY:
            attempt = int(message.get("Attributes", {}).get("ApproximateReceiveCount", "1"))
            delay = backoff_seconds(attempt)
            try:
                self.sqs.change_message_visibility(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"],
                                                   VisibilityTimeout=delay)
            except (BotoCoreError, ClientError) as exc:
                # It comes back after its visibility timeout instead of the backoff.
                logger.warning("message %s: could not set its backoff on SQS (%s)", message_id, exc)
            logger.warning("message %s: event %s not processed (%s); retried in %s s (receive %s)",
                           message_id, event, verdict.reason, delay, attempt)
            return False
        if self._has_dead_letter_queue():
            logger.error("message %s: poison (%s); left for the dead-letter queue", message_id, verdict.reason)
            return False
        logger.error("message %s: poison (%s); deleted, the queue has no dead-letter queue", message_id, verdict.reason)
        return True

    def _delete(self, messages):
        if not messages:
            return
        entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)]
        try:
            failed = self.sqs.delete_message_batch(QueueUrl=self.queue_url, Entries=entries).get("Failed", [])
        except (BotoCoreError, ClientError) as exc:
            failed = [{"Id": entry["Id"], "Message": str(exc)} for entry in entries]
        for failure in failed:
            # The message comes back after its visibility timeout; fulfilment sees a duplicate then.
            message = messages[int(failure["Id"])]
            logger.warning("message %s: could not be deleted from SQS (%s); it will be redelivered",
                           message["MessageId"], failure.get("Message") or failure.get("Code"))

    def _has_dead_letter_queue(self):
        """Asked per poison message (rare), so a DLQ added later is seen; unknown counts as yes, to lose nothing."""
        try:
            attributes = self.sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=["RedrivePolicy"])
        except (BotoCoreError, ClientError):
            return True
        return "RedrivePolicy" in attributes.get("Attributes", {})


class VisibilityHeartbeat:
    """Keeps a batch's unsettled messages hidden while they are worked on.

    A slow Stripe call could outlast the visibility timeout; SQS would then hand the same
    message to another worker. Harmless (fulfilment is idempotent) but wasteful, and each
    extra receive counts towards the dead-letter queue's maxReceiveCount.
    """

    def __init__(self, sqs, queue_url, messages, visibility=VISIBILITY_SECONDS, every=HEARTBEAT_SECONDS):
        self.sqs, self.queue_url, self.visibility, self.every = sqs, queue_url, visibility, every
        self._pending = {m["MessageId"]: m["ReceiptHandle"] for m in messages}
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="shop-sqs-heartbeat", daemon=True)

    def __enter__(self):
        if self._pending:
            self._thread.start()
        return self

    def __exit__(self, *exc_info):
        self._done.set()
        if self._thread.is_alive():
            self._thread.join()

    def settled(self, message):
        """Stop extending ``message``: it is about to be deleted or given its own visibility."""
        with self._lock:
            self._pending.pop(message["MessageId"], None)

    def _beat(self):
        while not self._done.wait(self.every):
            # Under the lock, so a message settled meanwhile never gets its backoff overwritten.
            with self._lock:
                entries = [{"Id": message_id, "ReceiptHandle": handle, "VisibilityTimeout": self.visibility}
                           for message_id, handle in self._pending.items()]
                if not entries:
                    continue
                try:
                    self.sqs.change_message_visibility_batch(QueueUrl=self.queue_url, Entries=entries)
                except (BotoCoreError, ClientError) as exc:
                    logger.warning("could not extend the visibility of %s messages: %s", len(entries), exc)


def poll_until_signalled(app):
    """Run the poller in the foreground until SIGINT or SIGTERM (``flask --app wsgi shop poll``)."""
    stop = threading.Event()

    def request_stop(signum, frame):
        logger.info("stopping after the current long poll (up to %s s)", app.config["SHOP_SQS_WAIT_SECONDS"])
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, request_stop)
    SqsPoller(app).run(stop)
