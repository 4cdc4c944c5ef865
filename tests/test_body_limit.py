"""An oversized body is refused from its Content-Length under gunicorn: 413, and the worker never holds it."""
import http.client
import json
import re
from urllib.parse import urlsplit

import pytest

from tests.support.gunicorn_server import gunicorn_server

pytestmark = pytest.mark.slow  # a real gunicorn

FIVE_MB = 5 * 1024 * 1024
CHUNK = b" " * 65536


@pytest.fixture(scope="module")
def one_worker(app, shop_env):
    """gunicorn with one worker (so every request meets the same process) and that worker's pid."""
    with gunicorn_server(shop_env(), workers=1) as served:
        with open(served.log_path) as log:
            pid = int(re.search(r"Booting worker with pid: (\d+)", log.read()).group(1))
        yield served.url, pid


def memory_kib(pid, field):
    """``VmRSS`` (now) or ``VmHWM`` (the peak so far) of a process, in KiB."""
    with open(f"/proc/{pid}/status") as status:
        return int(re.search(rf"^{field}:\s+(\d+) kB", status.read(), re.MULTILINE).group(1))


def post_five_megabytes(base_url):
    """POST 5 MB to the webhook as a client streaming it would; the server may answer before it has all of it."""
    parts = urlsplit(base_url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    connection.putrequest("POST", "/webhooks/stripe")
    connection.putheader("Content-Type", "application/json")
    connection.putheader("Content-Length", str(FIVE_MB))
    connection.putheader("Stripe-Signature", "t=1,v1=whatever")
    connection.endheaders()
    try:
        for _ in range(FIVE_MB // len(CHUNK)):
            connection.send(CHUNK)
    except (BrokenPipeError, ConnectionResetError):
        pass  # refused early and closed: the answer is already waiting to be read
    response = connection.getresponse()
    answer = response.status, json.loads(response.read())
    connection.close()
    return answer


def test_a_five_megabyte_webhook_gets_413_and_the_workers_memory_stays_flat(one_worker):
    base_url, pid = one_worker
    post_five_megabytes(base_url)  # the first request loads whatever it loads (imports, pool, caches)
    rss_before, peak_before = memory_kib(pid, "VmRSS"), memory_kib(pid, "VmHWM")

    answers = [post_five_megabytes(base_url) for _ in range(3)]

    assert answers == [(413, {"error": "That request is too large."})] * 3
    # Reading one such body into memory would raise the worker's peak by 5 MB at least.
    assert memory_kib(pid, "VmHWM") - peak_before < 1024
    # Keeping any of them would leave 5 MB more each. A gevent worker's resident size wanders by a megabyte or
    # two from one request to the next (allocator arenas, the background greenlets), with no trend.
    assert memory_kib(pid, "VmRSS") - rss_before < FIVE_MB // 1024 // 2
