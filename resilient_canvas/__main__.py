"""``python -m resilient_canvas`` runs the command line."""

from __future__ import annotations

from resilient_canvas._cli import entry_point

entry_point()
