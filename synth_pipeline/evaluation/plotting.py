"""The audit's figures: their style, size and PNG encoding, shared by ``report.py`` (which re-exports
every name) and ``dependency.py``'s heatmap, so neither imports the other for them.

Legibility (``report.py``'s docstring): one figure point is one CSS pixel on the page; fonts of
``PLOT_STYLE`` are at least ``MIN_FONT_PX`` as displayed.
"""

from __future__ import annotations

import base64
import io
import struct
from typing import Any

import matplotlib
from matplotlib.figure import Figure

# One figure point is one CSS pixel on the page (the PNG holds RENDER_DPI / 72 pixels per point for
# sharp text on high-density screens and is displayed at 72 / RENDER_DPI of its size).
RENDER_DPI = 144
MIN_FONT_PX = 10
PLOT_STYLE = {
    "font.size": 12, "axes.titlesize": 12.5, "axes.labelsize": 12, "xtick.labelsize": 11, "ytick.labelsize": 11,
    "legend.fontsize": 11, "figure.titlesize": 13, "axes.titlelocation": "left",
}
PLOT_W, PLOT_H = 7.0, 3.7  # inches = 504 x 266 CSS px: two per row on a laptop screen


def new_figure(w: float = PLOT_W, h: float = PLOT_H) -> Figure:
    """A figure in the report's style (fonts of ``PLOT_STYLE``; call inside ``plot_style()``)."""
    return Figure(figsize=(w, h), layout="constrained")


def plot_style() -> Any:
    return matplotlib.rc_context(PLOT_STYLE)


def png_b64(fig: Figure) -> str:
    """The figure as a base64 PNG at ``RENDER_DPI`` (shown at 72 / RENDER_DPI of its pixel size)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=RENDER_DPI, metadata={"Software": None})
    return base64.b64encode(buf.getvalue()).decode("ascii")


def png_size(data: str) -> tuple[int, int]:
    """Pixel width and height of a base64 PNG (its IHDR chunk)."""
    head = base64.b64decode(data[:44])
    return struct.unpack(">II", head[16:24])
