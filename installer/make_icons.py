"""Render ``resources/hemalens.svg`` into the raster icons the installers need.

Run once after editing the SVG (the outputs are committed)::

    .venv/bin/python installer/make_icons.py

Writes ``resources/hemalens.png`` (256 px: window icon, Linux hicolor 256x256),
``resources/hemalens.ico`` (Windows executable, 16-256 px) and
``resources/hemalens.icns`` (macOS bundle).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

RESOURCES = Path(__file__).resolve().parents[1] / "resources"
ICO_SIZES = [16, 24, 32, 48, 64, 128, 256]


def render_png(svg: Path, size: int) -> bytes:
    """Render ``svg`` to a square PNG of ``size`` pixels with Qt's SVG renderer.

    Parameters
    ----------
    svg : Path
        The SVG file.
    size : int
        Edge length in pixels.

    Returns
    -------
    bytes
        The PNG file's bytes.
    """
    from PySide6.QtCore import QBuffer, QByteArray, QIODevice, Qt
    from PySide6.QtGui import QGuiApplication, QImage, QPainter
    from PySide6.QtSvg import QSvgRenderer

    _app = QGuiApplication.instance() or QGuiApplication([])
    image = QImage(size, size, QImage.Format.Format_ARGB32)
    image.fill(Qt.GlobalColor.transparent)
    painter = QPainter(image)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    QSvgRenderer(str(svg)).render(painter)
    painter.end()
    data = QByteArray()
    buf = QBuffer(data)
    buf.open(QIODevice.OpenModeFlag.WriteOnly)
    image.save(buf, "PNG")
    buf.close()
    del _app
    return bytes(data.data())


def main() -> None:
    """Write the PNG, ICO and ICNS icons next to the SVG."""
    from PIL import Image

    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    svg = RESOURCES / "hemalens.svg"
    big = Image.open(io.BytesIO(render_png(svg, 1024))).convert("RGBA")
    (RESOURCES / "hemalens.png").write_bytes(render_png(svg, 256))
    big.save(RESOURCES / "hemalens.ico", sizes=[(s, s) for s in ICO_SIZES])
    big.save(RESOURCES / "hemalens.icns")


if __name__ == "__main__":
    main()
