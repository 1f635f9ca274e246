"""Figure helpers shared by the analyses: a labelled heatmap, and a save that never leaves half a file."""

from __future__ import annotations

from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # files only: analyses run on servers and in CI without a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from mygpt.files import atomic_path  # noqa: E402


def save_figure(fig, path: str, dpi: int = 110) -> str:
    """Write ``fig`` to ``path`` atomically (a crash never leaves half a PNG), then close it."""
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
    finally:
        plt.close(fig)
    return path


def _fit(inches: float, n: int, share: float = 0.75) -> float:
    """The font size (points) at which ``n`` labels side by side take ``share`` of ``inches``."""
    return float(np.clip(share * max(inches, 1.0) * 72 / max(n, 1), 2.5, 9.0))


def heatmap(
    matrix: np.ndarray,
    path: str,
    title: str,
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    xlabel: str = "",
    ylabel: str = "",
    cmap: str = "viridis",
    vmin: float | None = None,
    vmax: float | None = None,
    annotate: bool = True,
    cell_text: Sequence[Sequence[str]] | None = None,
    colorbar_label: str = "",
    center_zero: bool = False,
    figsize: tuple[float, float] | None = None,
) -> str:
    """A (rows, cols) heatmap with every row and column labelled, each cell annotated with its value
    (or with ``cell_text``), saved to ``path``."""
    matrix = np.asarray(matrix, dtype=float)
    rows, cols = matrix.shape
    if center_zero:  # symmetric scale so white means "no change" on diverging maps
        bound = float(np.nanmax(np.abs(matrix))) if np.isfinite(matrix).any() else 1.0
        vmin, vmax = -(bound or 1.0), bound or 1.0
    # Each cell gets a fixed size so its text stays legible; very large matrices get a fixed figure instead.
    figsize = figsize or (min(30.0, max(4.0, 0.55 * cols + 2.5)), min(24.0, max(3.0, 0.45 * rows + 1.5)))
    fig, ax = plt.subplots(figsize=figsize)
    image = ax.imshow(matrix, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    ax.set_xticks(range(cols), labels=list(col_labels), fontsize=_fit(figsize[0] - 2.5, cols),
                  rotation=90 if cols > 12 else 0)
    ax.set_yticks(range(rows), labels=list(row_labels), fontsize=_fit(figsize[1] - 1.5, rows))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    cbar = fig.colorbar(image, ax=ax)
    if colorbar_label:
        cbar.set_label(colorbar_label)
    if annotate and rows * cols <= 900:
        size = min(_fit(figsize[0] - 2.5, cols, 0.35), _fit(figsize[1] - 1.5, rows, 0.6))
        for r in range(rows):
            for c in range(cols):
                value = matrix[r, c]
                text = cell_text[r][c] if cell_text is not None else ("" if np.isnan(value) else f"{value:.2f}")
                red, green, blue, _ = image.cmap(image.norm(value)) if not np.isnan(value) else (1, 1, 1, 1)
                dark = 0.299 * red + 0.587 * green + 0.114 * blue < 0.5  # light text on dark cells
                ax.text(c, r, text, ha="center", va="center", fontsize=size, color="white" if dark else "black")
    return save_figure(fig, path)
