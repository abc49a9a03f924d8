"""The import contracts in pyproject.toml ([tool.importlinter]) hold, and they catch an upward import and a
policy that reaches for the loop."""

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("specstep", "reasoning", "routers", "judges", "eval", "training")


def lint_imports(cwd: Path) -> subprocess.CompletedProcess:
    """`lint-imports` in `cwd`, which holds the packages and pyproject.toml."""
    return subprocess.run([sys.executable, "-c", "from importlinter.cli import lint_imports_command as c; c()",
                           "--no-cache"], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_contracts_are_kept():
    r = lint_imports(ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "3 kept, 0 broken" in r.stdout, r.stdout


def test_a_policy_that_reaches_for_the_loop_breaks_a_contract(tmp_path):
    """One case on a copy of the tree: the contracts are specific enough to catch a policy importing the loop."""
    for pkg in PACKAGES:
        shutil.copytree(ROOT / pkg, tmp_path / pkg, ignore=shutil.ignore_patterns("__pycache__", "data"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    with open(tmp_path / "routers" / "oracle.py", "a") as f:
        f.write("\n\nfrom reasoning.controller import Controller\n")
    r = lint_imports(tmp_path)
    assert r.returncode == 1 and "routers.oracle -> reasoning.controller" in r.stdout, r.stdout + r.stderr
