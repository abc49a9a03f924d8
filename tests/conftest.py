import os
from typing import NamedTuple

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never use the Hub
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
if os.environ.get("PYTEST_XDIST_WORKER"):  # one core per worker (pytest -n 2): none waits on the other's threads
    os.environ.setdefault("OMP_NUM_THREADS", "1")

QUESTION = ("Lily has 5 red balloons and 7 blue balloons. She gives 3 balloons to her friend. "
            "How many balloons does she have left?")


@pytest.fixture(scope="session")
def smol():
    from reasoning.backends import load_backend

    return load_backend("smollm2-135m")


@pytest.fixture(scope="session")
def gemma():
    from reasoning.backends import load_backend

    return load_backend("gemma3-270m")


class CliResult(NamedTuple):
    returncode: int
    stdout: str
    stderr: str

    def error_line(self) -> str:
        """The one non-blank stderr line of a user error (asserts there is exactly one)."""
        lines = [ln for ln in self.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("specstep: error: "), self.stderr
        assert "Traceback" not in self.stderr
        return lines[0]


@pytest.fixture
def cli(capsys):
    """`specstep ARGS...` in this process (specstep.cli.main), with its exit code, stdout and stderr."""
    from specstep.cli import main

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        rc = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return CliResult(rc, out, err)

    return run
