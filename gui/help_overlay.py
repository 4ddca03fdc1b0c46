"""The keys overlay (``?``): what every key does, over the window, until ``?`` or Esc."""

from __future__ import annotations

from PySide6.QtCore import QEvent, QObject, QRect, Qt
from PySide6.QtGui import QColor, QFont, QFontMetrics, QKeyEvent, QPainter, QPaintEvent
from PySide6.QtWidgets import QWidget


class HelpOverlay(QWidget):
    """A translucent sheet listing ``(keys, meaning)`` rows, sized to its parent.

    Parameters
    ----------
    parent : QWidget
        The window it covers.
    """

    def __init__(self, parent: QWidget) -> None:
        super().__init__(parent)
        self.rows: list[tuple[str, str]] = []
        self.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents, False)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        parent.installEventFilter(self)
        self.hide()

    def toggle(self, rows: list[tuple[str, str]]) -> None:
        """Show these rows, or hide the overlay when it is shown."""
        if self.isVisible():
            self.hide()
            return
        self.rows = rows
        self.setGeometry(self.parentWidget().rect())
        self.show()
        self.raise_()
        self.setFocus()

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # noqa: N802, D102
        if obj is self.parentWidget() and event.type() == QEvent.Type.Resize and self.isVisible():
            self.setGeometry(self.parentWidget().rect())
        return False

    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802, D102
        if event.key() in (Qt.Key.Key_Escape, Qt.Key.Key_Question):
            self.hide()
            return
        super().keyPressEvent(event)

    def mousePressEvent(self, event: QEvent) -> None:  # noqa: N802, D102
        self.hide()

    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802, D102
        p = QPainter(self)
        p.fillRect(self.rect(), QColor(0, 0, 0, 170))
        font = QFont(self.font())
        font.setPointSizeF(font.pointSizeF() * 1.15)
        p.setFont(font)
        line = p.fontMetrics().height() + 8
        bold = QFont(font)
        bold.setBold(True)
        bold_metrics = QFontMetrics(bold)
        # The key column is as wide as its longest entry (translations and fonts vary).
        key_w = max((bold_metrics.horizontalAdvance(k) for k, _ in self.rows), default=0) + 24
        word_w = max((p.fontMetrics().horizontalAdvance(w) for _, w in self.rows), default=0)
        width = min(self.width() - 40, key_w + word_w + 60)
        height = line * (len(self.rows) + 2) + 20
        box = QRect((self.width() - width) // 2, max(20, (self.height() - height) // 2),
                    width, height)
        p.fillRect(box, QColor(250, 250, 250, 245))
        p.setPen(QColor(20, 20, 20))
        p.setFont(bold)
        p.drawText(box.adjusted(20, 10, -20, 0), Qt.AlignmentFlag.AlignTop,
                   "Keys (press ? or Esc to close)")
        y = box.top() + 10 + line + 6
        for keys, words in self.rows:
            p.setFont(bold)
            p.drawText(QRect(box.left() + 20, y, key_w, line), Qt.AlignmentFlag.AlignVCenter,
                       keys)
            p.setFont(font)
            p.drawText(QRect(box.left() + 20 + key_w, y, width - 40 - key_w, line),
                       Qt.AlignmentFlag.AlignVCenter, words)
            y += line
        p.end()
