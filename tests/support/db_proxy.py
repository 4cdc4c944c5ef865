"""A TCP proxy in front of the test MariaDB, for the outages a shop must live through.

``sever()`` drops every connection and refuses new ones (a restart, ``wait_timeout``, a refused
port) until ``restore()``; ``stall()`` keeps connections open but forwards nothing (a frozen
host, a dropped route) until ``resume()``.
"""
import socket
import threading

import sqlalchemy as sa


class DatabaseProxy:
    """Listens on a free loopback port; ``url`` is the database URL that goes through it."""

    def __init__(self, url):
        target = sa.make_url(url)
        self.upstream = (target.host or "127.0.0.1", target.port or 3306)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = target.set(host="127.0.0.1", port=self.listener.getsockname()[1]).render_as_string(
            hide_password=False)
        self.severed = False
        self.closed = False
        self.answering = threading.Event()
        self.answering.set()
        self._sockets = set()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def sever(self):
        with self._lock:
            self.severed = True
            for sock in self._sockets:
                _close(sock)
            self._sockets.clear()

    def restore(self):
        self.severed = False

    def stall(self):
        self.answering.clear()

    def resume(self):
        self.answering.set()

    def close(self):
        self.closed = True
        self.sever()
        self.listener.close()
        self.answering.set()  # lets threads held by a stall run into the closed sockets and end

    def _track(self, *socks):
        with self._lock:
            self._sockets |= set(socks)

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.severed:
                _close(client)
                continue
            self._track(client)
            threading.Thread(target=self._connect, args=(client,), daemon=True).start()

    def _connect(self, client):
        self.answering.wait()  # a silent server accepts the connection and never greets
        if self.closed or self.severed:
            _close(client)
            return
        server = socket.create_connection(self.upstream)
        self._track(server)
        for source, sink in ((client, server), (server, client)):
            threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source, sink):
        try:
            while data := source.recv(65536):
                self.answering.wait()  # held, never forwarded, while stalled
                sink.sendall(data)
        except OSError:
            pass
        finally:
            _close(source)
            _close(sink)


def _close(sock):
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
