"""Which mode an explorer runs in: "live" (kernel callbacks) or "static" (precomputed views).

``"live"``    one view, redrawn by kernel callbacks (``observe``) when a control moves. Needs a
              running kernel; anything can be combined (any set of prototypes dismissed, any
              percentage of the map).
``"static"``  every view is computed up front (HTML with embedded PNGs) and stacked in an
              ``ipywidgets.Stack``; the control is tied to the stack IN THE BROWSER with
              ``ipywidgets.jslink``. The built book keeps working with no kernel: the widget state,
              views included, is embedded in the page and rendered by the vendored widget manager
              (``book/_static/ipywidgets/embed.js``).
``"auto"``    (default) the rule, in order:
              1. ``IAIABL_STATIC_WIDGETS`` in the environment: ``1/true/yes/static`` -> static,
                 ``0/false/no/live`` -> live. The book build sets it (the Sphinx extension in
                 :mod:`iaiabl_lib.widgets.sphinx`), so the executed chapter is static.
              2. Inside a Jupyter kernel (a frontend may be listening) -> live.
              3. Anywhere else (a script, the test suite, a terminal) -> static: there is no comm to
                 call back.
"""
from __future__ import annotations

from ..config import env_static_widgets
from ..errors import InputError

__all__ = ["MODES", "STATIC_ENV", "LIVE_LINE", "STATIC_LINE", "resolve_mode"]

MODES = ("auto", "live", "static")
STATIC_ENV = "IAIABL_STATIC_WIDGETS"        # read by config.env_static_widgets, the one reader
LIVE_LINE = "Live: computed by the kernel as you move the controls"
STATIC_LINE = "Static: precomputed views, no kernel needed"



def _in_kernel() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    ip = get_ipython()
    return ip is not None and getattr(ip, "kernel", None) is not None


def resolve_mode(mode: str = "auto") -> str:
    """"live" or "static" for ``mode`` ("auto" follows the rule in the module docstring)."""
    if mode not in MODES:
        raise InputError(f"mode={mode!r}: choose one of {', '.join(MODES)}")
    if mode != "auto":
        return mode
    env = env_static_widgets()
    if env is not None:
        return "static" if env else "live"
    return "live" if _in_kernel() else "static"
