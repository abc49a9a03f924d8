"""The import contracts in pyproject.toml ([tool.importlinter]) hold, and they catch an upward import and a
policy that reaches for the loop."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("reasoning", "routers", "judges", "eval", "training")


def lint_imports(cwd: Path) -> subprocess.CompletedProcess:
    """`lint-imports` in `cwd`, which holds the packages and pyproject.toml."""
    return subprocess.run([sys.executable, "-c", "from importlinter.cli import lint_imports_command as c; c()",
                           "--no-cache"], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_contracts_are_kept():
    r = lint_imports(ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "3 kept, 0 broken" in r.stdout, r.stdout


@pytest.mark.parametrize("path, code, shown", [
    ("reasoning/types.py", "def _late():\n    from eval.grading import grade\n", "reasoning.types -> eval.grading"),
    ("judges/base.py", "import routers\n", "judges.base -> routers"),
    ("reasoning/api.py", "import reasoning.cli\n", "reasoning.api -> reasoning.cli"),
    ("routers/oracle.py", "from reasoning.controller import Controller\n", "routers.oracle -> reasoning.controller"),
    ("judges/rollout.py", "import reasoning.slots\n", "judges.rollout -> reasoning.slots"),
])
def test_an_upward_import_breaks_a_contract(tmp_path, path, code, shown):
    for pkg in PACKAGES:
        shutil.copytree(ROOT / pkg, tmp_path / pkg, ignore=shutil.ignore_patterns("__pycache__", "data"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    with open(tmp_path / path, "a") as f:
        f.write("\n\n" + code)
    r = lint_imports(tmp_path)
    assert r.returncode == 1 and shown in r.stdout, r.stdout + r.stderr
