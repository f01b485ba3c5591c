"""Figures become PNG bytes and embed inline in Markdown (UI metadata) and HTML (the report)."""

from __future__ import annotations

import base64

import pytest

from loyalty_assets.domain.figures import PNG_SIGNATURE, figure_png, new_figure, png_html, png_markdown


def test_a_figure_becomes_a_png_embedded_in_markdown_and_html():
    figure = new_figure(2, 1)
    figure.add_subplot().plot([0, 1], [1, 0])
    png = figure_png(figure)
    assert png.startswith(PNG_SIGNATURE)
    encoded = base64.b64encode(png).decode("ascii")
    assert png_markdown(png, "a line") == f"![a line](data:image/png;base64,{encoded})"
    assert png_html(png, 'a "line"') == f'<img alt="a &quot;line&quot;" src="data:image/png;base64,{encoded}">'


def test_bytes_that_are_not_a_png_are_refused():
    with pytest.raises(ValueError, match="expected PNG bytes"):
        png_markdown(b"GIF89a", "not a png")
