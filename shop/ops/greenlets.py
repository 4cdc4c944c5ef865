"""The shop under gevent workers (gunicorn.conf.py's default): many requests wait on Stripe at once.

A checkout spends most of its time waiting for the payment provider's API. Under gevent each
request is a greenlet and that wait costs nothing, so a worker keeps hundreds of provider calls
in flight where a thread per request kept eight.

The database is the exception, on purpose. Its connections use the operating system's blocking
sockets, so a greenlet that runs a transaction runs it from BEGIN to COMMIT without yielding to
the others. A row lock (the seats of a ticket type in a rush) is then held for the database's
own few milliseconds. With cooperative sockets, every statement inside the lock would wait its
turn behind every other greenlet's work, and the lock would be held that much longer. Measured on
the 2-core VM with wrk (two gevent workers, Stripe + 250 ms a call), cooperative → blocking database
sockets: sustained checkouts 90 → 112/s, and the event page's median 62 → 13 ms.

The price: while one greenlet waits on the database, its whole worker waits. That is a
millisecond on a healthy database. A silent one makes each worker wait up to the read timeout
(``SHOP_DB_READ_TIMEOUT``) per statement, one request after another, where threads would each
wait their own. No transaction may wait on anything but the database (never on Stripe, SMTP or
SQS: the services already call those with no transaction open), so two greenlets of one worker
never wait for each other's row locks.
"""
import socket

import pymysql
from sqlalchemy import event


def database_outside_the_loop(engine):
    """Give ``engine`` blocking MariaDB sockets when gevent has patched this process (else nothing to do)."""
    try:
        from gevent import monkey
    except ImportError:  # gevent is a requirement; without it nothing is patched either
        return
    if engine.dialect.driver != "pymysql" or not monkey.is_module_patched("socket"):
        return
    blocking_socket = monkey.get_original("socket", "socket")

    @event.listens_for(engine, "do_connect")
    def connect(dialect, connection_record, cargs, cparams):
        # pymysql connects on a socket it is given: the same handshake, timeouts and options as its own.
        connection = pymysql.connect(*cargs, defer_connect=True, **cparams)
        unix = bool(connection.unix_socket)
        sock = blocking_socket(socket.AF_UNIX if unix else socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.settimeout(connection.connect_timeout)
            sock.connect(connection.unix_socket if unix else (connection.host, connection.port))
            if not unix:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        except OSError as exc:
            sock.close()
            # What pymysql itself raises when it cannot connect: SQLAlchemy and the shop know it (2003).
            raise pymysql.err.OperationalError(
                2003, f"Can't connect to MySQL server on {connection.host!r} ({exc})") from exc
        connection.connect(sock=sock)
        return connection
