"""Where the directories of plain files that travel with the code are: the page (``static/``) and
the browser extension (``extension/``).

They stay at the top of the repository, where `make run` and the tests use them from the source
tree; a wheel or sdist carries each as a data-only package inside ``tempalias`` (setup.py maps
them there), which is looked at first.
"""

from __future__ import annotations

import os

PACKAGE = os.path.dirname(os.path.abspath(__file__))


def bundled_directory(name: str) -> str:
    """``tempalias/NAME`` in an installed wheel, else ``NAME`` beside ``tempalias/`` (a checkout,
    the editable install)."""
    installed = os.path.join(PACKAGE, name)
    if os.path.isdir(installed):
        return installed
    return os.path.join(os.path.dirname(PACKAGE), name)
