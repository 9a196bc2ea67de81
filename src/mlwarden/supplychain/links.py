"""Links in a source folder that lead out of it: refused before anything is read.

A planted link (``model.safetensors -> ~/.ssh/id_rsa``) must not make the scan read,
hash or report on a file outside the repository, cache or artifact folder it names.

Example::

    check_links(Path("snap"), Path("models--acme--tiny"), "Hugging Face snapshot", "cache")
"""

from __future__ import annotations

import os
from pathlib import Path

from mlwarden.core.errors import UserError


def check_links(path: Path, top: Path, what: str, where: str) -> None:
    """Refuse ``path`` (a file or folder) when it, or a link under it, resolves outside
    ``top``: a planted link must not make the scan read ``~/.ssh``. ``what`` and
    ``where`` name the source and ``top`` in the message."""
    inside = str(Path(os.path.realpath(top))).rstrip(os.sep) + os.sep

    def refuse(full: str) -> None:
        real = os.path.realpath(full)
        if real + os.sep != inside and not real.startswith(inside):
            raise UserError(
                f"{full}: a link in the {what} leads outside the {where} ({real!r}); "
                "refused, nothing was scanned"
            )

    refuse(str(path))
    if not os.path.isdir(path):
        return
    for root, dirs, names in os.walk(path):
        for name in [*names, *dirs]:
            full = os.path.join(root, name)
            if os.path.islink(full):
                refuse(full)
