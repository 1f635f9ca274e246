"""bertviz views that render offline: the vendored libraries are the npm files the README names, the views carry
them inline, and headless Chromium draws every attention line with all network requests blocked -- two views on
one page included (the second loads the libraries where require.js already runs, as in a notebook)."""

from __future__ import annotations

import hashlib
import json
import os
import re
from importlib import resources

import pytest
import torch

from mygpt.analysis.bertviz_offline import (
    VENDOR,
    head_view,
    head_view_html,
    libraries_html,
    model_view_html,
    page_html,
    per_layer_attentions,
    write_view,
)
from mygpt.analysis.core import readable_token
from tests.browser import offline

CHROMIUM = "/usr/bin/chromium"
TOKENS = ["ROMEO", ":", "Ċ", "But", "Ġsoft", "!", "\n", "</script><b>"]  # raw BPE, decoded, and a hostile token


def causal_attention(n_layer: int = 2, n_head: int = 3, t: int = len(TOKENS), seed: int = 0) -> torch.Tensor:
    """(n_layer, nh, T, T) random causal attention: each row sums to one over keys 0..query."""
    scores = torch.randn(n_layer, n_head, t, t, generator=torch.Generator().manual_seed(seed))
    return scores.masked_fill(~torch.ones(t, t, dtype=torch.bool).tril(), float("-inf")).softmax(-1)


def params(fragment: str) -> dict:
    return json.loads(re.search(r"const params = (\{.*?\});", fragment, re.S).group(1).replace("<\\/", "</"))


def test_vendored_files_are_the_npm_files_the_readme_names():
    vendor = resources.files("mygpt.analysis").joinpath("vendor")
    readme = vendor.joinpath("README.md").read_text(encoding="utf-8")
    for name in VENDOR:
        digest = hashlib.sha256(vendor.joinpath(name).read_bytes()).hexdigest()
        assert f"`{name}`" in readme and digest in readme, f"{name} changed: its sha256 is now {digest}"
    for licence in ("LICENSE-d3.txt", "LICENSE-jquery.txt", "LICENSE-requirejs.txt"):
        assert "Permission" in vendor.joinpath(licence).read_text(encoding="utf-8") or "Redistribution" in \
            vendor.joinpath(licence).read_text(encoding="utf-8")


def test_setup_cfg_ships_the_vendored_files():
    setup_cfg = open(os.path.join(os.path.dirname(__file__), "..", "setup.cfg"), encoding="utf-8").read()
    assert re.search(r"^\s+analysis/vendor/\*$", setup_cfg, re.M)


def test_tokens_read_as_people_read_them():
    assert [readable_token(t) for t in ["Ġthe", "Ċ", " the", "\n", "\t", "", "\x07"]] == \
        [" the", "↵", " the", "↵", "⇥", "∅", "\\x07"]
    # byte-level spellings of multi-byte characters: whole ("—", "Â") or cut between two tokens (bytes shown)
    assert [readable_token(t) for t in ["âĢĶ", "ÃĤ", "âĢ"]] == ["—", "Â", "\\xe2\\x80"]
    assert params(head_view_html(causal_attention(), TOKENS))["attention"][0]["left_text"] == \
        ["ROMEO", ":", "↵", "But", " soft", "!", "↵", "</script><b>"]
    assert params(head_view_html(causal_attention(), TOKENS, readable=False))["attention"][0]["left_text"][2] == "Ċ"


def test_views_inline_the_libraries_and_load_nothing_from_the_network():
    for fragment in (head_view_html(causal_attention(), TOKENS), model_view_html(causal_attention(), TOKENS)):
        assert fragment.startswith(libraries_html())
        view = fragment.removeprefix(libraries_html())
        assert not re.search(r"<script[^>]+src=", fragment) and "require.config" not in view
        assert "cdnjs" not in view  # (a URL left in a comment of bertviz's script is only text)
        assert fragment.count("</script>") == 4  # three library scripts and the view's own: the token did not end one
    assert "<html" not in head_view_html(causal_attention(), TOKENS)  # a fragment, for a notebook output
    assert head_view(causal_attention(), TOKENS).data.startswith(libraries_html())  # IPython HTML


def test_attention_from_a_model_output_or_stacked_reads_the_same():
    stacked = causal_attention()
    from_output = tuple(layer.unsqueeze(0) for layer in stacked)  # what output.attentions holds
    assert [t.shape for t in per_layer_attentions(stacked, len(TOKENS))] == [(1, 3, 8, 8)] * 2
    assert params(head_view_html(stacked, TOKENS))["attention"] == params(head_view_html(from_output, TOKENS))[
        "attention"]


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="covers 8 tokens but 2 tokens were given"):
        head_view_html(causal_attention(), ["a", "b"])
    with pytest.raises(ValueError, match="layer 2 does not exist"):
        head_view_html(causal_attention(), TOKENS, layer=2)
    with pytest.raises(ValueError, match="head 5 does not exist"):
        model_view_html(causal_attention(), TOKENS, include_heads=[5])
    with pytest.raises(ValueError, match="output_attentions=True"):
        head_view_html((None, None), TOKENS)
    with pytest.raises(ValueError, match="display_mode"):
        model_view_html(causal_attention(), TOKENS, display_mode="blue")


def test_a_page_of_several_views_keeps_the_libraries_once(tmp_path):
    views = [head_view_html(causal_attention(), TOKENS), model_view_html(causal_attention(), TOKENS)]
    page = page_html(*views, title="two <views>")
    assert page.count(libraries_html()) == 1 and "two &lt;views&gt;" in page
    path = write_view(tmp_path / "views.html", *views)
    assert path.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert [p.name for p in tmp_path.iterdir()] == ["views.html"]  # written atomically, nothing left beside it


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"no {CHROMIUM}: install Debian's chromium "
                    "(apt-get install chromium) and Playwright (pip install playwright) to run the browser test")
def test_views_draw_every_attention_line_in_headless_chromium_with_the_network_blocked(tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright to run the browser test")
    attention = causal_attention()
    n_layer, n_head, t, _ = attention.shape
    # Three views in one notebook: every output carries the libraries, so the later ones load them again on a page
    # where require.js already runs (the case that leaves a naive inlining blank).
    fragments = [head_view_html(attention, TOKENS), model_view_html(attention, TOKENS),
                 head_view_html(attention, TOKENS, layer=1, heads=[0])]
    path = tmp_path / "views.html"
    path.write_text("<!DOCTYPE html><meta charset='utf-8'><body>" + "<hr>".join(fragments), encoding="utf-8")
    attempted, errors = [], []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.on("pageerror", lambda error: errors.append(str(error)))

            offline(page, attempted)
            page.goto(path.as_uri())
            page.wait_for_function("document.querySelectorAll('svg line').length > 0", timeout=10_000)
            page.wait_for_timeout(300)  # let every view finish drawing
            lines = page.eval_on_selector_all(
                "div[id^=bertviz]", "views => views.map(v => v.querySelectorAll('svg line').length)")
            labels = page.eval_on_selector_all("div[id^=bertviz] svg text", "ts => ts.map(t => t.textContent)")
        finally:
            browser.close()
    assert attempted == [] and errors == []
    # bertviz draws one line per (head, query, key) of the layer shown (weight as opacity); the model view draws
    # every layer x head thumbnail; the third view shows layer 1 with head 0 selected, yet draws all heads' lines.
    assert lines == [n_head * t * t, n_layer * n_head * t * t, n_head * t * t]
    assert " soft" in labels and "↵" in labels and "</script><b>" in labels
