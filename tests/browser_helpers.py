"""Headless Chromium (Debian's ``chromium`` package) driven through Playwright's DevTools client.

Playwright's own browser download is never used: ``executable_path`` points at the system
binary. Used by the browser test and by ``benchmarks/report_100k.py``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from playwright.sync_api import BrowserContext, sync_playwright

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
"""The Chromium binary (``CHROMIUM`` overrides the default)."""

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
"""Chromium flags: headless, no sandbox (containers run as root), no network of its own."""

RENDERED = "g.iciclelayer path.surface"
"""A selector that exists once plotly has drawn an icicle."""


@contextmanager
def chromium(width: int = 1400, height: int = 1000) -> Iterator[BrowserContext]:
    """Start headless Chromium with a new, temporary profile folder; yield its context."""
    with (
        tempfile.TemporaryDirectory(prefix="tasktrace-chromium-") as profile,
        sync_playwright() as playwright,
    ):
        context = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=str(CHROMIUM),
            headless=True,
            args=FLAGS,
            viewport={"width": width, "height": height},
        )
        try:
            yield context
        finally:
            context.close()
