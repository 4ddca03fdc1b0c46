"""Standing rules of the layout: the engine is Qt-free and the packaging is complete."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN_IN_ENGINE = ("PySide6", "PyQt5", "PyQt6", "qtpy", "pyqtgraph", "superqt", "hemalens.gui")


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_engine_never_imports_qt_or_gui():
    offenders = []
    for path in sorted((ROOT / "engine").rglob("*.py")):
        for name in _imports(path):
            if any(name == bad or name.startswith(bad + ".") for bad in FORBIDDEN_IN_ENGINE):
                offenders.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not offenders, "\n".join(offenders)


def test_importing_the_whole_engine_loads_no_qt():
    modules = [
        ".".join(("hemalens", *p.relative_to(ROOT).with_suffix("").parts))
        .removesuffix(".__init__")
        for p in sorted((ROOT / "engine").rglob("*.py"))
    ]
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "qt = ('PySide6', 'pyqtgraph', 'qtpy', 'superqt')\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in qt or m.startswith('hemalens.gui')]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT.parent
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


def test_simulator_shares_no_code_with_what_it_tests():
    # Ground truth proves nothing if the simulator and the segmentation share code.
    for path in sorted((ROOT / "engine" / "synth").rglob("*.py")):
        for name in _imports(path):
            assert not name.startswith(("hemalens.engine.segment", "hemalens.engine.io")), (
                f"{path.name} imports {name}"
            )


def test_every_package_is_listed_in_pyproject():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    mapping = config["package-dir"]
    found = set()
    for prefix, folder in mapping.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder).parts
            found.add(".".join((prefix, *rel)))
    assert found == listed


def test_no_bare_top_level_engine_or_gui_package(tmp_path):
    # Run outside the source tree, where the folders themselves are not on sys.path.
    code = (
        "import importlib.util as u, hemalens.engine, hemalens.gui, hemalens.resources\n"
        "print(u.find_spec('engine'), u.find_spec('gui'), u.find_spec('resources'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path
    )
    assert out.stdout.split() == ["None", "None", "None"]
