"""Faust tasks: each declares what the worker does and calls into ``app.runtime``.

Agents import nothing from ``streams/`` or ``models/``: the one object they use
is the typed runtime container that ``streams.worker`` builds and hangs on the
app, so the dependency between the packages goes one way (streams -> agents).
"""

from agents.catalogue import register as _register_catalogue
from agents.personalise import register as _register_personalise


def register(app) -> None:
    """Attach every task to ``app`` (a :class:`streams.app.RecoApp`)."""
    _register_personalise(app)
    _register_catalogue(app)
