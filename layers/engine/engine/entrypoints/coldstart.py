"""A function's cold start, imported first by every `functions/*/app.py` (and by
`python -m engine`, which starts the same way).

A cold start creates a few hundred thousand objects (modules, classes, pydantic's schemas),
and nearly all of them live as long as the container. While they are made, the cyclic
garbage collector, set off by allocation counts, walks them again and again and frees
nothing: about a sixth of a handler's import. Importing this module pauses it; `imports_done`,
the last line of each app.py, freezes what the imports made (later collections skip it, so
the first requests do not walk it either) and resumes collecting.

isort keeps this import first (pyproject.toml: the `cold-start` section).
"""

from __future__ import annotations

import gc

gc.disable()


def imports_done() -> None:
    """The handler module is loaded: everything made so far is kept; collect from now on."""
    gc.freeze()
    gc.enable()
