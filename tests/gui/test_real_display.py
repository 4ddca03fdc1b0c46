"""The window on a real X server (Xvfb), driven with xdotool as a user would.

Offscreen tests hide real-display failures (missing xcb libraries, window shortcuts that
need the window to have the focus). This starts ``hemalens gui PROJECT`` under Xvfb, waits
for its window, presses ``2`` and ``Ctrl+Q`` with xdotool, and checks that the key's edit
reached the project's history and that a screenshot of the screen shows the window.
Skipped where xvfb-run or xdotool are not installed (a clean CI machine).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from hemalens.engine.project.store import Project

pytestmark = [pytest.mark.gui, pytest.mark.timeout(180)]

TOOLS = ("xvfb-run", "xdotool", "import")


@pytest.mark.skipif(not all(shutil.which(t) for t in TOOLS) or not sys.platform.startswith(
    "linux"), reason="needs xvfb-run, xdotool, import (apt install xvfb xdotool imagemagick)")
def test_a_key_pressed_on_a_real_display_edits_the_project(predicted_project, tmp_path):
    shot = tmp_path / "screen.png"
    painted = (f"from PIL import Image; import sys; lo, hi = Image.open('{shot}').convert('L')"
               ".getextrema(); sys.exit(0 if hi > lo else 1)")
    driver = tmp_path / "drive.sh"
    driver.write_text(textwrap.dedent(f"""\
        set -e
        {sys.executable} -m hemalens.engine.cli gui {predicted_project} &
        app=$!
        for i in $(seq 1 300); do
            wid=$(xdotool search --onlyvisible --name '^HemaLens' 2>/dev/null | head -1) || true
            [ -n "$wid" ] && break
            sleep 0.2
        done
        [ -n "$wid" ] || {{ echo "no window"; kill $app; exit 2; }}
        # wait until the window has painted something (a mapped window starts black)
        for i in $(seq 1 120); do
            import -window root {shot} 2>/dev/null && {sys.executable} -c "{painted}" && break
            sleep 0.5
        done
        xdotool windowfocus --sync "$wid"
        xdotool key --window "$wid" 2
        sleep 2
        # the window may be gone before xdotool sends the key releases (BadWindow)
        xdotool key --window "$wid" ctrl+q || true
        wait $app
        """))
    env = {k: v for k, v in os.environ.items() if k != "QT_QPA_PLATFORM"}
    env["QT_QPA_PLATFORM"] = "xcb"
    env["HOME"] = str(tmp_path)  # settings and the reviewer name stay out of the user's
    run = subprocess.run(["xvfb-run", "-a", "-s", "-screen 0 1600x1000x24", "bash",
                          str(driver)], capture_output=True, text=True, timeout=150, env=env)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    with Project.open(predicted_project) as p:
        h = p.annotations.history()
    assert len(h["cell_id"]) >= 1, "the key press did not reach the project"
    assert set(h["op"].tolist()) <= {"relabel", "confirm"}
    from PIL import Image

    lo, hi = Image.open(shot).convert("L").getextrema()
    assert hi > lo, "the window never painted on the X server"
