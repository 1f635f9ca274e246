"""bertviz's head view and model view, rendered without a network.

bertviz 1.4.1 loads require.js from cdnjs and asks require.js for d3 5.7.0 and jQuery 2.0.0 from cdnjs, so its
views are blank offline (and wherever a CDN is blocked). Here its HTML (``html_action="return"``) is taken apart:
the ``<script src=...require.min.js>`` tag and the ``require.config({...})`` block are dropped, and the three
libraries shipped in ``mygpt/analysis/vendor/`` (npm packages, see the README there) are inlined before the view:

1. d3 and jQuery, run with AMD hidden from them (loaded on a page where require.js already runs -- a second view
   in the same notebook, classic Jupyter -- they would register as anonymous AMD modules and require.js would
   refuse them: the view stays blank). jQuery is then handed back with ``noConflict(true)``, so a page's own
   ``$`` (classic Jupyter's) is left alone.
2. require.js itself (it keeps the loader already on a page, if there is one).
3. ``define('d3', ...)`` and ``define('jquery', ...)`` for the copies from step 1, which bertviz's
   ``requirejs(['jquery', 'd3'], ...)`` then finds without a network.

Each view is self-contained (~410 kB of libraries plus the weights), so it renders in Jupyter, JupyterLab,
VS Code and Colab (which puts each output in its own frame) and as a file opened from disk.
"""

from __future__ import annotations

import functools
import html
import re
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

import torch

from mygpt.files import write_text

from .core import check_heads, check_layers, readable_token

__all__ = ["head_view", "head_view_html", "libraries_html", "model_view", "model_view_html", "page_html",
           "per_layer_attentions", "write_view"]

VENDOR = ("d3.min.js", "jquery.min.js", "require.js")

# What bertviz 1.4.1 puts in its returned HTML to reach the network; both must be found and removed, or the view
# would still try the CDN (a newer bertviz that changed them fails loudly here instead).
_REQUIRE_TAG = re.compile(r'<script src="https://cdnjs\.cloudflare\.com/ajax/libs/require\.js/[^"]+"></script>')
_REQUIRE_CONFIG = re.compile(r"require\.config\(\{.*?\}\);", re.S)
_SOURCE_MAP = re.compile(r"^//# sourceMappingURL=.*$", re.M)  # devtools would fetch the map


def _vendored(name: str) -> str:
    text = resources.files(__package__).joinpath("vendor", name).read_text(encoding="utf-8")
    # "</script" inside a script element would end it early; "<\/" means the same in JS strings and regexes.
    return _SOURCE_MAP.sub("", text).replace("</script", "<\\/script")


@functools.lru_cache(maxsize=1)
def libraries_html() -> str:
    """The ``<script>`` elements that make require.js, d3 and jQuery available to a bertviz view, offline."""
    d3, jquery, requirejs = (_vendored(name) for name in VENDOR)
    hidden_amd = (
        "<script>/* d3 5.7.0 and jQuery 2.1.4 from mygpt/analysis/vendor, once per page, with AMD hidden */\n"
        "if (!window.__mygptBertviz) { (function () { var scope = {};\n"
        f"(function (define, exports, module) {{\n{d3}\n}}).call(scope);\n"
        f"(function (define, exports, module) {{\n{jquery}\n}}).call(scope);\n"
        "window.__mygptBertviz = {d3: scope.d3, jquery: window.jQuery.noConflict(true)};\n"
        "})(); }\n</script>\n"
    )
    # require.js must run at the top level: it declares the globals require/define with `var`.
    return (hidden_amd + f"<script>\n{requirejs}\n</script>\n"
            "<script>define('d3', [], function () { return window.__mygptBertviz.d3; });\n"
            "define('jquery', [], function () { return window.__mygptBertviz.jquery; });</script>\n")


def per_layer_attentions(attentions: torch.Tensor | Sequence[torch.Tensor], n_tokens: int) -> list[torch.Tensor]:
    """Attention weights as bertviz takes them: one (1, nh, T, T) tensor per layer.

    Accepts a model's ``output.attentions`` (a tuple of n_layer tensors (1, nh, T, T) or (nh, T, T)) or one
    stacked tensor (n_layer, nh, T, T) such as :func:`mygpt.analysis.attention_for_text` gives. Weights are
    rounded to 3 decimals in float64 (bertviz draws them as line opacities), so the page holds ``0.123``
    rather than float32's 17 digits.
    """
    layers = list(attentions.unbind(0) if isinstance(attentions, torch.Tensor) else attentions)
    if not layers:
        raise ValueError("no attention weights: expected n_layer tensors (1, nh, T, T) or one (n_layer, nh, T, T)")
    checked = []
    for index, layer in enumerate(layers):
        if layer is None:
            raise ValueError(f"layer {index} has no attention weights: run the model with output_attentions=True "
                             'and attn_implementation="eager"')
        if layer.dim() == 4 and layer.shape[0] == 1:
            layer = layer[0]
        if layer.dim() != 3 or layer.shape[-1] != layer.shape[-2]:
            raise ValueError(f"layer {index}'s attention is {tuple(layer.shape)}: expected (1, nh, T, T) or "
                             "(nh, T, T) for a single text")
        if layer.shape[-1] != n_tokens:
            raise ValueError(f"attention covers {layer.shape[-1]} tokens but {n_tokens} tokens were given")
        checked.append(torch.round(layer.detach().to("cpu", torch.float64), decimals=3).unsqueeze(0))
    return checked


def _offline(view_html: str) -> str:
    """bertviz's returned HTML with its CDN loads replaced by the vendored libraries."""
    without_tag, tags = _REQUIRE_TAG.subn("", view_html)
    body, configs = _REQUIRE_CONFIG.subn("", without_tag, count=1)
    if tags != 1 or configs != 1:
        raise RuntimeError("bertviz's HTML no longer has the require.js tag and require.config block this helper "
                           "replaces (bertviz>=1.4.1,<1.5 is supported): the view would load from the network")
    # The view's script holds the tokens: one spelling "</script>" (or "<!--") must not end it early. Inside the
    # script they only occur in JS strings, where "<\\/" and "<\\!" mean the same.
    opened = body.index(">", body.index("<script")) + 1
    closed = body.rindex("</script>")
    script = body[opened:closed].replace("</", "<\\/").replace("<!--", "<\\!--")
    return libraries_html() + body[:opened] + script + body[closed:]


def _labels(tokens: Sequence[str], readable: bool) -> list[str]:
    return [readable_token(t) for t in tokens] if readable else [str(t) for t in tokens]


def head_view_html(attentions: torch.Tensor | Sequence[torch.Tensor], tokens: Sequence[str], *,
                   layer: int | None = None, heads: Sequence[int] | None = None,
                   include_layers: Sequence[int] | None = None, readable: bool = True) -> str:
    """bertviz's head view (one layer, lines from each token to those it reads) as an HTML fragment that
    renders offline.

    Args:
        attentions: n_layer tensors (1, nh, T, T) (``output.attentions``) or one (n_layer, nh, T, T).
        tokens: the T tokens; shown as people read them (:func:`~mygpt.analysis.core.readable_token`: Ġ or a
            space as a space, Ċ or a newline as ↵) unless ``readable=False``.
        layer: the layer shown first (default 0); heads: the heads selected first (default all).
        include_layers: the layers offered at all (default all; fewer make long texts lighter).
    """
    from bertviz import head_view as bertviz_head_view

    per_layer = per_layer_attentions(attentions, len(tokens))
    n_layer, n_head = len(per_layer), per_layer[0].shape[1]
    include = check_layers(include_layers, n_layer) if include_layers is not None else None
    if layer is not None:
        (layer,) = check_layers([layer], n_layer)
        if include is not None and layer not in include:
            raise ValueError(f"layer {layer} is not among include_layers {include}")
    heads = check_heads(heads, n_head) if heads is not None else None
    view = bertviz_head_view(per_layer, _labels(tokens, readable), layer=layer, heads=heads,
                             include_layers=include, prettify_tokens=False, html_action="return")
    return _offline(view.data)


def model_view_html(attentions: torch.Tensor | Sequence[torch.Tensor], tokens: Sequence[str], *,
                    include_layers: Sequence[int] | None = None, include_heads: Sequence[int] | None = None,
                    display_mode: str = "light", readable: bool = True) -> str:
    """bertviz's model view (a thumbnail per layer × head; click one to enlarge) as an HTML fragment that renders
    offline. Arguments as :func:`head_view_html`; ``display_mode`` is ``light`` or ``dark``."""
    from bertviz import model_view as bertviz_model_view

    if display_mode not in ("light", "dark"):
        raise ValueError(f"display_mode must be 'light' or 'dark', not {display_mode!r}")
    per_layer = per_layer_attentions(attentions, len(tokens))
    layers = check_layers(include_layers, len(per_layer)) if include_layers is not None else None
    heads = check_heads(include_heads, per_layer[0].shape[1]) if include_heads is not None else None
    view = bertviz_model_view(per_layer, _labels(tokens, readable), include_layers=layers, include_heads=heads,
                              display_mode=display_mode, prettify_tokens=False, html_action="return")
    return _offline(view.data)


def head_view(attentions: torch.Tensor | Sequence[torch.Tensor], tokens: Sequence[str], **options: Any):
    """:func:`head_view_html` as an ``IPython.display.HTML`` object: the last line of a notebook cell shows it."""
    from IPython.display import HTML

    return HTML(head_view_html(attentions, tokens, **options))


def model_view(attentions: torch.Tensor | Sequence[torch.Tensor], tokens: Sequence[str], **options: Any):
    """:func:`model_view_html` as an ``IPython.display.HTML`` object."""
    from IPython.display import HTML

    return HTML(model_view_html(attentions, tokens, **options))


def page_html(*fragments: str, title: str = "Attention") -> str:
    """A whole HTML document around one or more view fragments (each view keeps its own controls); the libraries
    that every fragment carries are kept once, at the top."""
    if not fragments:
        raise ValueError("page_html needs at least one view fragment")
    libraries = libraries_html()
    body = libraries + "\n<hr>\n".join(f.removeprefix(libraries) for f in fragments)
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{html.escape(title)}</title>\n'
            f"</head>\n<body>\n<h1>{html.escape(title)}</h1>\n{body}\n</body>\n</html>\n")


def write_view(path: str | Path, *fragments: str, title: str = "Attention") -> Path:
    """Write :func:`page_html` of ``fragments`` to ``path`` atomically (opens offline from disk)."""
    return write_text(path, page_html(*fragments, title=title))
