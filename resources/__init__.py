"""Bundled resources: icons, default settings (read with importlib.resources)."""
