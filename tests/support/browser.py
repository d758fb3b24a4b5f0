"""Debian's Chromium under Playwright, launched one way for every browser test."""

from __future__ import annotations

import shutil
from typing import Any

CHROMIUM_ARGS = [
    "--no-sandbox",  # CI runs as root
    "--disable-gpu",
    "--disable-background-networking",  # loopback only: no update or metrics calls
    "--disable-component-update",
    "--no-first-run",
]


async def launch_chromium(playwright: Any) -> Any:
    """A headless Chromium browser (``make browser`` installs it)."""
    path = shutil.which("chromium")
    assert path, "Debian's chromium is needed: `make browser` installs it"
    return await playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
