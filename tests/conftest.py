"""Test-suite settings shared by every area."""

from __future__ import annotations

import os

from hypothesis import settings

# CI runs the same examples every time (a red build must be reproducible); locally,
# hypothesis keeps exploring new ones.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")
