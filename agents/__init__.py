"""Faust tasks: wiring only. The maths lives in ``models/``, the runtime in ``streams/``."""

from agents.catalogue import register as _register_catalogue
from agents.personalise import register as _register_personalise


def register(app) -> None:
    """Attach every task to ``app`` (a :class:`streams.app.RecoApp`)."""
    _register_personalise(app)
    _register_catalogue(app)
