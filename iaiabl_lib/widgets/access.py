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

A button that chooses another case of the same explorer (:func:`case_button`, e.g. the other view
of the same lesion) is a native ``<button>`` (Tab, Enter and Space for free) whose inline click
handler (:data:`CHOOSE_CASE_JS`) picks that case in the explorer's visible case list (the option
whose text is the case's name, or starts with it and a space; the widget manager writes the
options' spaces as no-break spaces, read as spaces) and tells the list it changed, as a reader's
choice would: the widget's own view then updates its model, and whatever follows the list (the
precomputed views through ``jslink``, a live kernel's callbacks, the other explorers sharing the
case) follows; the focus moves to the list.

Explorers that share one chosen case (``frame.share_case``) on a page without a kernel need one
more step, because a case list ordered otherwise (the case reader's lists by call, by flagged
evidence, by disagreement) is a separate list that ``jslink`` cannot tie to the others (it copies
positions, and a position in a sorted list is another case). Every case view carries an empty
``<style>`` element (:func:`shown_hook`, in ``cases.case_header``) whose load event fires each time
the view is put on the page (the widget manager draws only the case a list shows); its handler
(:data:`SHOWN_JS`) does nothing unless its explorer's mode line carries a static share group
(``.iaiabl-shared[data-group]``). Then:

* when the explorer's visible case list is the one it saw before (the reader chose a case in it, or
  a linked list changed it), the case of the view is chosen in the visible case list of every other
  explorer of the group (only where it is not chosen already, so the echo stops there);
* when the visible list is new (the page has just been drawn, or the reader chose another order),
  that list takes the case the other explorers show, so that changing the order keeps the case.
"""
from __future__ import annotations

import html

__all__ = ["KEYDOWN_JS", "CHANGE_JS", "CHOOSE_CASE_JS", "SHOWN_JS", "handlers", "toggle_label", "case_button",
           "shown_hook"]

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


CHOOSE_CASE_JS = ("var x=this.closest('.iaiabl-explorer'),n=this.getAttribute('data-case');if(!x)return;"
                  "var s=Array.prototype.filter.call(x.querySelectorAll('.iaiabl-case-picker select'),"
                  "function(e){return e.offsetParent!==null;})[0];if(!s)return;"
                  "for(var k=0;k<s.options.length;k++){var t=s.options[k].text.replace(/\\u00a0/g,' ');"
                  "if(t==n||t.indexOf(n+' ')==0){s.selectedIndex=k;"
                  "s.dispatchEvent(new Event('change',{bubbles:true}));s.focus();return;}}")
"""Choose the case named ``data-case`` in the visible case list of the enclosing explorer."""

SHOWN_JS = ("var n=this.getAttribute('data-case'),x=this.closest('.iaiabl-explorer');if(!x)return;"
            "var g=x.querySelector('.iaiabl-shared[data-group]');if(!g)return;g=g.getAttribute('data-group');"
            "var L=function(e){return Array.prototype.filter.call(e.querySelectorAll('.iaiabl-case-picker select'),"
            "function(s){return s.offsetParent!==null;})[0];};"
            "var T=function(o){return o.text.replace(/\\u00a0/g,' ');};"
            "var P=function(s,c){for(var k=0;k<s.options.length;k++){var t=T(s.options[k]);"
            "if(t==c||t.indexOf(c+' ')==0){if(s.selectedIndex!=k){s.selectedIndex=k;"
            "s.dispatchEvent(new Event('change',{bubbles:true}));}return;}}};"
            "var O=Array.prototype.filter.call(document.querySelectorAll('.iaiabl-explorer'),function(e){"
            "var d=e.querySelector('.iaiabl-shared[data-group]');return e!==x&&d&&d.getAttribute('data-group')==g;});"
            "var s=L(x);if(s&&s!==x.iaiablList){x.iaiablList=s;for(var i=0;i<O.length;i++){var o=L(O[i]);"
            "if(o&&o.selectedIndex>=0){var m=T(o.options[o.selectedIndex]).split(' \u00b7 ')[0];if(m!=n)P(s,m);return;}}"
            "return;}O.forEach(function(e){var o=L(e);if(o)P(o,n);});")
"""Run when a case view is put on the page: share its case with the explorers of its group, or
take theirs when its case list has just been shown (see the module docstring)."""

assert '"' not in KEYDOWN_JS + CHANGE_JS + CHOOSE_CASE_JS + SHOWN_JS


def case_button(case_name: str, text: str) -> str:
    """A button that chooses the case ``case_name`` ("Test case 2", as the case list names it) in
    its explorer's case list (:data:`CHOOSE_CASE_JS`); ``text`` (plain) what it says."""
    return (f"<button type='button' class='iaiabl-choose-case' data-case='{html.escape(case_name, quote=True)}' "
            f'onclick="{html.escape(CHOOSE_CASE_JS, quote=False)}">{html.escape(text)}</button>')


def shown_hook(case_name: str) -> str:
    """An empty ``<style>`` element whose load event (each time the view holding it is put on the
    page) runs :data:`SHOWN_JS` for the case ``case_name`` ("Test case 2", as the case lists name it)."""
    return (f"<style class='iaiabl-shown' data-case='{html.escape(case_name, quote=True)}' "
            f'onload="{html.escape(SHOWN_JS, quote=False)}"></style>')


def toggle_label(for_id: str, content: str, pressed: bool, cls: str = "", attrs: str = "",
                 label: str = "") -> str:
    """A ``<label for=for_id>`` that is a toggle button for the keyboard and screen readers:
    ``content`` (HTML) inside, ``pressed`` its input's initial state, ``label`` an accessible name
    when the content alone does not say what the button does (e.g. an image)."""
    name = f" aria-label='{html.escape(label, quote=True)}'" if label else ""
    return (f"<label for='{for_id}' class='{cls}' tabindex='0' role='button' "
            f"aria-pressed='{'true' if pressed else 'false'}'{name}{(' ' + attrs) if attrs else ''}>"
            f"{content}</label>")
