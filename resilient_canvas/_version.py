"""The package version and home, in a module of their own: the User-Agent reads them
without importing the package (which imports the client, which builds the User-Agent)."""

from __future__ import annotations

__version__ = "0.1.0.dev0"

#: Where people reading a server's logs learn what sent a request.
PROJECT_URL = "https://example.invalid/resilient_canvas"
