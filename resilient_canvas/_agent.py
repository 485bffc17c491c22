"""The User-Agent every request carries.

Hosted Canvas refuses requests without a valid User-Agent (403 since January
2026) and Instructure asks each integration to name its product and a contact,
so the header always names us and the libraries below us, and a caller's
``user_agent=`` goes in front: ``gradesync/2.1 (it@school.edu)
resilient-canvas/0.1 (+https://...) aiohttp/3.14 Python/3.12``.
"""

from __future__ import annotations

import platform

import aiohttp

from resilient_canvas._version import PROJECT_URL, __version__

#: Ours and the stack below, most specific first as RFC 9110 asks.
DEFAULT_USER_AGENT = (
    f"resilient-canvas/{__version__} (+{PROJECT_URL}) "
    f"aiohttp/{aiohttp.__version__} Python/{platform.python_version()}"
)


def build_user_agent(product: str | None) -> str:
    """Return the User-Agent to send: the caller's *product* (if any), then ours.

    Raises:
        ValueError: If *product* is blank or holds a line break (a header
            injection, or a value every server would refuse).
    """
    if product is None:
        return DEFAULT_USER_AGENT
    cleaned = product.strip()
    if not cleaned or any(char in cleaned for char in "\r\n\0"):
        raise ValueError(
            "user_agent must name your product and a contact on one line, e.g. "
            f"'gradesync/2.1 (it@school.edu)', not {product!r}."
        )
    return f"{cleaned} {DEFAULT_USER_AGENT}"
