"""Chromium for the browser tests: Debian's own (never a downloaded build), driven by Playwright for Python.

A pytest plugin: ``chromium`` (one headless browser per run), ``artifacts`` (``tests/artifacts/``, where
screenshots and PDFs are kept for people to look at; git-ignored) and ``axe`` (axe-core's script from
``tests/js``, installed by ``tests/run`` with npm).
"""
import os
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
TESTS = Path(__file__).resolve().parent.parent
AXE = TESTS / "js" / "node_modules" / "axe-core" / "axe.min.js"
ARTIFACTS = TESTS / "artifacts"
needs_chromium = pytest.mark.skipif(not os.path.exists(CHROMIUM),
                                    reason=f"no Chromium at {CHROMIUM} (Debian's chromium package)")


@pytest.fixture(scope="session")
def chromium():
    from playwright.sync_api import sync_playwright
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def artifacts():
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def axe():
    """The path of axe-core's script; the test is skipped when ``tests/run`` could not install it."""
    if not AXE.exists():
        pytest.skip(f"axe-core is not installed ({AXE}): cd tests/js && npm ci")
    return AXE
