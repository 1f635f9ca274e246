"""Progress bars for the loops that take more than a few seconds: scoring, generation, the sampler grid, analyses.

One rule for all of them, the Hugging Face one: a bar is drawn (on stderr) only when stderr is a terminal, and
never when progress bars are switched off for huggingface_hub — ``HF_HUB_DISABLE_PROGRESS_BARS=1`` in the
environment, or ``huggingface_hub.utils.disable_progress_bars()`` (all bars) / ``disable_progress_bars("mygpt")``
(only ours) in Python. So log files, CI output and test output hold no bar.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from huggingface_hub.utils import are_progress_bars_disabled
from huggingface_hub.utils import tqdm as _HubTqdm

__all__ = ["ProgressBar", "progress"]

GROUP = "mygpt"  # the name huggingface_hub's switches know our bars by


class ProgressBar(_HubTqdm):
    """A ``tqdm`` bar that follows huggingface_hub's on/off switches (see the module docstring)."""


def progress(iterable: Iterable[Any] | None = None, *, desc: str, total: float | None = None, unit: str = "it",
             unit_scale: bool = False) -> ProgressBar:
    """A bar over ``iterable`` (or one to ``update`` by hand up to ``total``), removed from the screen when done.

    ``disable=None`` is tqdm's own rule: no bar when stderr is not a terminal.
    """
    disable = True if are_progress_bars_disabled(GROUP) else None
    return ProgressBar(iterable, desc=desc, total=total, unit=unit, unit_scale=unit_scale, leave=False,
                       disable=disable, dynamic_ncols=True, name=GROUP)
