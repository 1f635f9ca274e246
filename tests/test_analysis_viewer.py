"""The offline attention viewer: one HTML file with its data inline and no external resource, which headless
Chromium renders (lines and overview squares drawn) with every network request blocked."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import numpy as np
import pytest
import torch
from PIL import Image

from mygpt.analysis.viewer import attention_payload, render_attention_html, write_attention_html

TOKENS = ["ROMEO", ":", "\n", "But", " soft", "!", "\n", "JULIET", ":", "\n", "Ay", " me", "!"]


def hand_attention(n_layer: int = 2, n_head: int = 3) -> torch.Tensor:
    """(L, nh, T, T): head 0 reads the previous token, head 1 the first token, the rest spread evenly."""
    t = len(TOKENS)
    attention = torch.tril(torch.ones(n_layer, n_head, t, t))
    attention = attention / attention.sum(-1, keepdim=True)
    attention[:, 0] = 0
    attention[:, 0, 0, 0] = 1
    attention[:, 0, torch.arange(1, t), torch.arange(t - 1)] = 1
    attention[:, 1] = 0
    attention[:, 1, :, 0] = 1
    return attention


def inline_data(page: str) -> dict:
    block = re.search(r'<script type="application/json" id="attention-data">(.*?)</script>', page, re.S).group(1)
    return json.loads(block)


def test_payload_keeps_the_causal_part_of_every_row_and_the_tokens():
    data = attention_payload(hand_attention(), TOKENS)
    assert data["n_layer"] == 2 and data["n_head"] == 3 and data["tokens"][2] == "↵"
    rows = data["attention"][1][0]
    assert [len(r) for r in rows] == list(range(1, len(TOKENS) + 1))
    assert rows[5] == [0, 0, 0, 0, 1000, 0]  # token 5 reads token 4 (weights in thousandths)
    assert data["attention"][0][2][3] == [250, 250, 250, 250]  # the even head
    with pytest.raises(ValueError, match="13 tokens but 2 tokens were given"):
        attention_payload(hand_attention(), ["a", "b"])


def test_page_is_self_contained_with_the_data_inline():
    page = render_attention_html(hand_attention(), TOKENS, title="Romeo <&> Juliet")
    assert "Romeo &lt;&amp;&gt; Juliet" in page
    assert not re.search(r"<(script|link|img|iframe)[^>]+(src|href)=", page, re.I)
    assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", page)  # the SVG namespace is a name, not a fetch
    assert inline_data(page)["tokens"] == attention_payload(hand_attention(), TOKENS)["tokens"]


def test_a_token_that_spells_a_closing_script_tag_cannot_break_the_page():
    tokens = TOKENS[:-1] + ["</script><b>"]
    page = render_attention_html(hand_attention(), tokens)
    assert inline_data(page)["tokens"][-1] == "</script><b>"


def _chromium() -> str | None:
    return next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


@pytest.mark.skipif(_chromium() is None, reason="headless Chromium is not installed (Debian: apt-get install chromium)")
def test_the_page_renders_offline_in_headless_chromium(tmp_path):
    page = tmp_path / "attention.html"
    write_attention_html(hand_attention(), TOKENS, str(page), title="offline check")
    offline = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               f"--user-data-dir={tmp_path / 'profile'}", "--proxy-server=127.0.0.1:9",  # no network at all
               "--host-resolver-rules=MAP * ~NOTFOUND", "--window-size=1100,700"]
    dom = subprocess.run(offline + ["--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120).stdout
    # The script ran: one line per drawn weight (>= 0.01) of layer 0, all heads, and L x H overview squares.
    weights = hand_attention()[0].numpy()
    assert dom.count("<line ") == int((weights >= 0.01).sum())
    assert dom.count("<canvas") == 2 * 3
    shot = tmp_path / "shot.png"
    subprocess.run(offline + [f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=120, check=True)
    with Image.open(shot) as image:
        pixels = np.asarray(image.convert("RGB")).astype(int)
    # Text is grey or black; the lines (head colours) and the overview (blue) are saturated: count those.
    saturated = (pixels.max(-1) - pixels.min(-1)) > 60
    assert saturated.sum() > 3000, f"only {saturated.sum()} coloured pixels: the viewer drew (almost) nothing"
