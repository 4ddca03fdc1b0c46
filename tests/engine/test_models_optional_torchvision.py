"""torchvision is optional: imported on first AlexNet use, refused in one line when absent.

The standalone CPU build (installer/) may ship without torchvision; LeNet5 must work there.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(120)


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=110, env={"PATH": "", "OMP_NUM_THREADS": "1"})


def test_importing_the_models_does_not_import_torchvision():
    out = _run("import sys, hemalens.engine.models as m; "
               "print('torchvision' in sys.modules, 'torch' in sys.modules)")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "True"]


def test_without_torchvision_lenet5_builds_and_alexnet_is_refused_in_one_line():
    code = (
        "import sys; sys.modules['torchvision'] = None\n"  # import torchvision -> ImportError
        "from hemalens.engine.errors import HemaLensError\n"
        "from hemalens.engine.models import ModelSpec, build_model\n"
        "from hemalens.engine.embed.network import _torchvision_backbone\n"
        "net = build_model(ModelSpec('lenet5', 4, 0.25, 32))\n"
        "print(type(net).__name__)\n"
        "for call in (lambda: build_model(ModelSpec('alexnet', 4, 0.5, 64)),\n"
        "             lambda: _torchvision_backbone('resnet18')):\n"
        "    try:\n"
        "        call()\n"
        "    except HemaLensError as err:\n"
        "        print('ERR|' + str(err))\n"
    )
    out = _run(code)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "LeNet5"
    assert len(lines) == 3
    assert lines[1].startswith("ERR|alexnet: needs torchvision") and "--arch lenet5" in lines[1]
    assert lines[2].startswith("ERR|resnet18: needs torchvision") and "--backbone small" in lines[2]


def test_with_torchvision_alexnet_still_builds():
    pytest.importorskip("torchvision")
    from hemalens.engine.models import AlexNet, ModelSpec, build_model

    net = build_model(ModelSpec("alexnet", 4, 0.5, 64))
    assert isinstance(net, AlexNet)
