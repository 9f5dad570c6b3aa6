"""The Faust topology: ``faust -A topology worker`` finds ``topology.app``.

The app and its agents are imported on first access of ``topology.app``, so tools that
only need a helper module (``topology.topics``, ``topology.broker_compat``) do not build
a Faust app.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "app":
        from topology import instruments, signals, tick_hop, volume, web  # noqa: F401
        from topology.app import app

        # Importing the submodule bound ``topology.app`` to the module: rebind the name
        # to the App, as Faust expects.
        globals()["app"] = app
        return app
    raise AttributeError(name)
