"""Faust agents and timers: wiring only. The maths lives in ``models/``."""

from agents.catalogue import register as _register_catalogue
from agents.control import register as _register_control
from agents.personalise import register as _register_personalise


def register(app) -> None:
    """Attach every agent and timer to ``app`` (a :class:`streams.app.RecoApp`)."""
    _register_personalise(app)
    _register_catalogue(app)
    _register_control(app)
