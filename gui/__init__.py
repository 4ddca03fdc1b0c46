"""HemaLens GUI: PySide6 + pyqtgraph views and controllers (no algorithms)."""
