"""Check, before Qt starts, that the system libraries Qt's X11 platform plugin needs exist.

Without them Qt aborts with "Could not load the Qt platform plugin xcb" and a core dump,
which a technician cannot act on. On Linux this reads the plugin's dependencies with
``ldd`` and, when some are missing, names them with the one command that installs them
(Debian/Ubuntu and Fedora package names). ``python -m hemalens.gui.system_check`` prints
the result.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

#: Shared library → (Debian/Ubuntu package, Fedora package) for what PySide6's xcb plugin needs.
PACKAGES: dict[str, tuple[str, str]] = {
    "libxcb-cursor.so.0": ("libxcb-cursor0", "xcb-util-cursor"),
    "libxkbcommon-x11.so.0": ("libxkbcommon-x11-0", "libxkbcommon-x11"),
    "libxkbcommon.so.0": ("libxkbcommon0", "libxkbcommon"),
    "libxcb-icccm.so.4": ("libxcb-icccm4", "xcb-util-wm"),
    "libxcb-keysyms.so.1": ("libxcb-keysyms1", "xcb-util-keysyms"),
    "libxcb-image.so.0": ("libxcb-image0", "xcb-util-image"),
    "libxcb-render-util.so.0": ("libxcb-render-util0", "xcb-util-renderutil"),
    "libxcb-shape.so.0": ("libxcb-shape0", "libxcb"),
    "libxcb-randr.so.0": ("libxcb-randr0", "libxcb"),
    "libxcb-xkb.so.1": ("libxcb-xkb1", "libxcb"),
    "libxcb-xinerama.so.0": ("libxcb-xinerama0", "libxcb"),
    "libxcb.so.1": ("libxcb1", "libxcb"),
    "libX11-xcb.so.1": ("libx11-xcb1", "libX11-xcb"),
    "libEGL.so.1": ("libegl1", "libglvnd-egl"),
    "libGL.so.1": ("libgl1", "libglvnd-glx"),
    "libOpenGL.so.0": ("libopengl0", "libglvnd-opengl"),
    "libfontconfig.so.1": ("libfontconfig1", "fontconfig"),
    "libdbus-1.so.3": ("libdbus-1-3", "dbus-libs"),
    "libglib-2.0.so.0": ("libglib2.0-0", "glib2"),
}


def needs_xcb(platform: str | None = None, env: dict[str, str] | None = None) -> bool:
    """Whether Qt will load its X11 (xcb) plugin: Linux without another platform chosen."""
    env = dict(os.environ) if env is None else env
    platform = sys.platform if platform is None else platform
    if not platform.startswith("linux"):
        return False
    chosen = env.get("QT_QPA_PLATFORM", "")
    if chosen:
        return chosen.split(";")[0].split(":")[0] == "xcb"
    # Qt prefers Wayland only when a Wayland session is running; else it loads xcb.
    return not env.get("WAYLAND_DISPLAY")


def _plugin_libraries() -> list[Path]:
    import PySide6

    root = Path(PySide6.__file__).parent
    found = list((root / "Qt" / "plugins" / "platforms").glob("libqxcb.so"))
    found += list((root / "Qt" / "lib").glob("libQt6XcbQpa.so*"))
    return found


def missing_libraries(libraries: list[Path] | None = None) -> list[str]:
    """Return the shared libraries ``ldd`` reports as not found for Qt's xcb plugin.

    Parameters
    ----------
    libraries : list of Path, optional
        The files to check; PySide6's xcb plugin and its platform library by default.

    Returns
    -------
    list of str
        Sorted sonames that are missing (empty when all are there or ``ldd`` is absent).
    """
    ldd = shutil.which("ldd")
    if ldd is None:
        return []
    missing: set[str] = set()
    for lib in _plugin_libraries() if libraries is None else libraries:
        try:
            out = subprocess.run([ldd, str(lib)], capture_output=True, text=True, timeout=10,
                                 check=False).stdout
        except (OSError, subprocess.SubprocessError):
            continue
        for line in out.splitlines():
            if "=> not found" in line:
                missing.add(line.split("=>")[0].strip())
    return sorted(missing)


def install_line(missing: list[str]) -> str:
    """Return the install commands for ``missing`` sonames (Debian/Ubuntu, then Fedora)."""
    debian = sorted({PACKAGES[m][0] for m in missing if m in PACKAGES})
    fedora = sorted({PACKAGES[m][1] for m in missing if m in PACKAGES})
    if not debian:
        return "install the packages that provide them"
    return (f"sudo apt-get install {' '.join(debian)}  (Debian/Ubuntu)  or  "
            f"sudo dnf install {' '.join(fedora)}  (Fedora)")


def xcb_problem() -> str | None:
    """Return a one-line reason the window cannot open on X11, or None when it can."""
    if not needs_xcb():
        return None
    missing = missing_libraries()
    if not missing:
        return None
    return (f"cannot open the window: Qt's X11 plugin needs system libraries that are missing "
            f"({', '.join(missing)}); {install_line(missing)}")


if __name__ == "__main__":
    problem = xcb_problem()
    print(problem or "Qt's X11 plugin has every system library it needs")
    sys.exit(1 if problem else 0)
