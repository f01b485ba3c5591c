"""Figures as small PNG images, embedded inline: Markdown for the UI's metadata, HTML for the report.

matplotlib's object API on the Agg canvas: no display, no global pyplot state.
"""

from __future__ import annotations

import base64
import html
import io

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
DPI = 80


def new_figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(figure)
    return figure


def figure_png(figure: Figure) -> bytes:
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def _data_uri(png: bytes) -> str:
    if not png.startswith(PNG_SIGNATURE):
        raise ValueError("expected PNG bytes")
    return f"data:image/png;base64,{base64.b64encode(png).decode('ascii')}"


def png_markdown(png: bytes, alt: str) -> str:
    """Inline Markdown image ``![alt](data:image/png;base64,...)``."""
    return f"![{alt}]({_data_uri(png)})"


def png_html(png: bytes, alt: str) -> str:
    """Inline HTML ``<img>`` with the PNG as a data URI."""
    return f'<img alt="{html.escape(alt)}" src="{_data_uri(png)}">'
