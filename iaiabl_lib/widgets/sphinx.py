"""The Sphinx extension of the book (``sphinx: extra_extensions: [iaiabl_lib.widgets]`` in
``_config.yml``; Sphinx calls :func:`setup` of the package, which is this one).

* Before the notebooks are executed it sets ``IAIABL_STATIC_WIDGETS=1`` in the build process (the
  kernels inherit it), so every explorer of the book is static and works without a kernel.
  Config value ``iaiabl_widgets_mode``: "static" (default), "live", or "auto" (leave the
  environment alone).
* On every page it writes each script once. sphinx-thebe registers its configuration
  (``const THEBE_JS_URL = …``) as an inline script while the sources are read; Sphinx (7.4) adds it
  to the page assets then, with the file name ``None``, and again before writing (assets
  registered after the builder started), with the file name ``""``, and does not see the two as the
  same. The page then declares the ``const`` twice and the browser stops that script with
  "Identifier 'THEBE_JS_URL' has already been declared".
* Before each embedded widget it puts a ``<noscript>`` message: without JavaScript the explorers
  cannot be drawn, and the reader is told so where the explorer would be.
* It gives the theme a colour mode ("auto") when none is configured: pydata-sphinx-theme otherwise
  starts every page with an empty mode and logs "Got invalid theme mode: . Resetting to auto." as a
  console error.
"""
from __future__ import annotations

import re

from ..config import set_static_widgets_default
from ..errors import InputError

__all__ = ["setup", "NOSCRIPT", "unique_scripts", "add_noscript"]

THEME_MODE = "auto"

NOSCRIPT = ("<noscript><div class='admonition warning iaiabl-noscript'><p class='admonition-title'>"
            "This explorer needs JavaScript</p><p>The interactive explorer that belongs here is drawn "
            "by JavaScript in your browser (no server, no internet connection needed). Turn "
            "JavaScript on for this page and reload it to use it.</p></div></noscript>")

_WIDGET_VIEW = re.compile(r'<script type="application/vnd\.jupyter\.widget-view\+json">')


def _set_static_env(app, config) -> None:
    mode = str(getattr(config, "iaiabl_widgets_mode", "static")).lower()
    if mode not in ("static", "live", "auto"):
        raise InputError(f"iaiabl_widgets_mode={mode!r}: use static, live or auto")
    if mode != "auto":
        # the environment wins, so `IAIABL_STATIC_WIDGETS=0 jupyter-book build .` can still test live
        set_static_widgets_default(mode == "static")


def unique_scripts(scripts) -> list:
    """``scripts`` (Sphinx's ``_JavaScript`` assets) without repeats: two assets are the same when
    their file name (``None`` and "" alike: an inline script), priority and attributes (the inline
    body among them) agree. The first of each is kept, in order."""
    seen, out = set(), []
    for js in scripts:
        attrs = getattr(js, "attributes", {}) or {}
        key = (str(getattr(js, "filename", js) or ""), getattr(js, "priority", None),
               tuple(sorted((k, str(v)) for k, v in attrs.items())))
        if key not in seen:
            seen.add(key)
            out.append(js)
    return out


def add_noscript(body: str) -> str:
    """``body`` with :data:`NOSCRIPT` before each embedded widget view."""
    return _WIDGET_VIEW.sub(lambda m: NOSCRIPT + m.group(0), body)


def _page_context(app, pagename, templatename, context, doctree) -> None:
    if "script_files" in context:
        context["script_files"] = unique_scripts(context["script_files"])
    if not context.get("default_mode"):
        context["default_mode"] = THEME_MODE
    body = context.get("body")
    if isinstance(body, str) and "widget-view+json" in body:
        context["body"] = add_noscript(body)


def setup(app) -> dict:
    """Register the config value and the two hooks (see the module docstring)."""
    app.add_config_value("iaiabl_widgets_mode", "static", "env")
    app.connect("config-inited", _set_static_env)
    app.connect("html-page-context", _page_context)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
