"""A real SMTP server on loopback (aiosmtpd) that keeps every message it accepts, for the shop's mail to reach.

``stop()`` closes its port (the shop then meets "connection refused", as with a mail server that
is down); ``start()`` listens on the same port again. Messages are parsed with the standard
library's ``email`` package, as a mail client would read them.
"""
import email
import email.policy
import socket
import threading
import time
from dataclasses import dataclass

from aiosmtpd.controller import Controller


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Received:
    sender: str
    recipients: list
    message: email.message.EmailMessage

    @property
    def subject(self):
        return self.message["Subject"]

    @property
    def text(self):
        return self.message.get_body(("plain",)).get_content()

    @property
    def html(self):
        return self.message.get_body(("html",)).get_content()

    def attachments(self):
        """``{filename: (content type, bytes)}``"""
        return {part.get_filename(): (part.get_content_type(), part.get_payload(decode=True))
                for part in self.message.iter_attachments()}


class _Keep:
    """Accepts every message, except for mailboxes at ``refused.test``, which it refuses for good (550)."""

    def __init__(self, server):
        self.server = server

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.endswith("@refused.test"):
            return "550 5.1.1 No such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        received = Received(envelope.mail_from, list(envelope.rcpt_tos),
                            email.message_from_bytes(envelope.content, policy=email.policy.default))
        with self.server.lock:
            self.server.received.append(received)
        return "250 Message accepted for delivery"


class SmtpServer:
    """aiosmtpd on ``127.0.0.1:<port>``; ``received`` holds what it accepted, in order."""

    def __init__(self, port=None):
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.received = []
        self.lock = threading.Lock()
        self._controller = None

    @property
    def running(self):
        return self._controller is not None

    def start(self):
        if self._controller is None:
            self._controller = Controller(_Keep(self), hostname=self.host, port=self.port)
            self._controller.start()
        return self

    def stop(self):
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def clear(self):
        with self.lock:
            self.received.clear()

    def messages(self, to=None, subject_contains=None):
        with self.lock:
            found = list(self.received)
        return [m for m in found if (to is None or to in m.recipients)
                and (subject_contains is None or subject_contains in (m.subject or ""))]

    def wait_for(self, count=1, timeout=10.0, **filters):
        """The messages matching ``filters`` once there are at least ``count``; AssertionError after ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.messages(**filters)
            if len(found) >= count:
                return found
            time.sleep(0.05)
        raise AssertionError(f"{count} message(s) matching {filters} not received within {timeout} s: "
                             f"{[m.subject for m in self.messages()]}")
