"""Keyboard and screen-reader access for the explorers' HTML controls.

The explorers' own controls (heat-map buttons, overlay toggles, enlarge, the what-if choices) are
hidden radio buttons and check boxes whose state the style sheet reads (``:checked``), each shown as
a ``<label>``. Such a label is made a button for the keyboard and for screen readers
(:func:`toggle_label`): ``tabindex=0`` (Tab reaches it), ``role=button`` and ``aria-pressed`` (its
state, written when the HTML is made and kept in sync when it changes).

Two inline event handlers on the element that holds the controls (:func:`handlers`) do the rest,
by delegation, with no script element and nothing loaded from anywhere (an ipywidgets HTML view
inserts its value as ``innerHTML``: a ``<script>`` would not run, inline handlers do; so the same
HTML works in a live notebook, on the static book page and in a plain HTML file):

* keydown: Enter or Space on such a label clicks it (what a mouse click does: the browser checks
  its input);
* change (an input of the holder was checked or unchecked): every label's ``aria-pressed`` is set
  from its input; when the enlarge check box turns on, a keydown listener on the document closes the
  enlarged view on Escape (wherever the focus is), and removes itself when the view closes.

Without JavaScript the labels still work with the mouse (the CSS needs none).
"""
from __future__ import annotations

import html

__all__ = ["KEYDOWN_JS", "CHANGE_JS", "handlers", "toggle_label"]

KEYDOWN_JS = ("var t=event.target,k=event.key;"
              "if(t.tagName=='LABEL'&&t.getAttribute('role')=='button'&&(k=='Enter'||k==' '||k=='Spacebar'))"
              "{event.preventDefault();if(!event.repeat)t.click();}")
"""Enter or Space on a label-button clicks it."""

CHANGE_JS = ("this.querySelectorAll('label[aria-pressed]').forEach(function(l){var c=l.control;"
             "if(c)l.setAttribute('aria-pressed',c.checked?'true':'false');});"
             "var z=event.target;if(z.classList&&z.classList.contains('iaiabl-zoom')){"
             "if(z.checked&&!z.iaiablEsc){z.iaiablEsc=function(e){if((e.key=='Escape'||e.key=='Esc')&&z.checked)"
             "{e.preventDefault();z.click();}};document.addEventListener('keydown',z.iaiablEsc);}"
             "else if(!z.checked&&z.iaiablEsc){document.removeEventListener('keydown',z.iaiablEsc);z.iaiablEsc=null;}}")
"""Keep every label's aria-pressed in sync with its input; Escape closes the enlarged view."""


def handlers() -> str:
    """The two inline handler attributes for the element holding the controls (double-quoted; the
    scripts hold no double quote, so only ``&``, ``<`` and ``>`` are escaped)."""
    return (f'onkeydown="{html.escape(KEYDOWN_JS, quote=False)}" '
            f'onchange="{html.escape(CHANGE_JS, quote=False)}"')


assert '"' not in KEYDOWN_JS + CHANGE_JS


def toggle_label(for_id: str, content: str, pressed: bool, cls: str = "", attrs: str = "",
                 label: str = "") -> str:
    """A ``<label for=for_id>`` that is a toggle button for the keyboard and screen readers:
    ``content`` (HTML) inside, ``pressed`` its input's initial state, ``label`` an accessible name
    when the content alone does not say what the button does (e.g. an image)."""
    name = f" aria-label='{html.escape(label, quote=True)}'" if label else ""
    return (f"<label for='{for_id}' class='{cls}' tabindex='0' role='button' "
            f"aria-pressed='{'true' if pressed else 'false'}'{name}{(' ' + attrs) if attrs else ''}>"
            f"{content}</label>")
