"""A core install works without torch: with torch, transformers, llama_cpp and vllm made unimportable,
the packages import, `specstep --help` and `--version` work, and a model spec whose engine is missing
fails with one line naming the extra. The pyproject's extras hang together. No model is loaded."""

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("specstep", "reasoning", "routers", "judges", "eval", "training")

ENGINES = ("torch", "transformers", "llama_cpp", "vllm")
BLOCK = textwrap.dedent("""
    import importlib.abc, sys

    class _Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {name!r} (blocked)", name=name)
            return None

    sys.meta_path.insert(0, _Block())
""") + f"sys.path.insert(0, {str(ROOT)!r})\n"


def without_engines(code: str, blocked: tuple[str, ...] = ENGINES) -> subprocess.CompletedProcess:
    script = f"BLOCKED = {blocked!r}\n" + BLOCK + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)


def cli(*args: str, blocked: tuple[str, ...] = ENGINES) -> subprocess.CompletedProcess:
    return without_engines(f"from specstep.cli import main\nraise SystemExit(main({list(args)!r}))", blocked)


def test_the_packages_import_without_torch():
    r = without_engines("""
        import importlib, sys
        for m in ("reasoning", "reasoning.api", "specstep.cli", "specstep.serve", "reasoning.backends.openai",
                  "routers", "judges", "eval", "training", "eval.sweep", "training.train", "training.collect"):
            importlib.import_module(m)
        import reasoning, routers, judges
        assert reasoning.Solver and routers.ROUTERS and judges.JUDGES
        assert not {"torch", "transformers"} & set(sys.modules), "imported an engine"
        print(reasoning.__version__)
    """)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip()


def test_help_and_version_without_torch():
    r = cli("--help")
    assert r.returncode == 0, r.stderr
    assert "solve" in r.stdout and "--version" in r.stdout
    r = cli("--version")
    assert r.returncode == 0, r.stderr
    assert re.fullmatch(r"specstep \S+", r.stdout.strip()), r.stdout
    import reasoning

    assert r.stdout.strip() == f"specstep {reasoning.__version__}"


@pytest.mark.parametrize("args, line", [
    (["--draft", "smollm2-135m", "--router", "draft-only"],
     "specstep: error: model spec 'smollm2-135m': the transformers engine needs torch, which is not installed: "
     'pip install "specstep[transformers]"'),
    (["--draft", "hf:./some-model", "--router", "draft-only"],
     "specstep: error: model spec 'hf:./some-model': the transformers engine needs torch, which is not installed: "
     'pip install "specstep[transformers]"'),
    (["--target", "llamacpp:gemma3-270m", "--router", "target-only"],
     "specstep: error: model spec 'llamacpp:gemma3-270m': the llama.cpp engine needs torch, which is not "
     'installed: pip install "specstep[llamacpp]"'),
    (["--draft", "openai:m?base_url=http://127.0.0.1:9/v1&tokenizer=smollm2-135m", "--router", "draft-only"],
     "specstep: error: model spec 'openai:m?base_url=http://127.0.0.1:9/v1&tokenizer=smollm2-135m': tokenizer= "
     'needs torch, which is not installed: pip install "specstep[transformers]"'),
])
def test_a_missing_engine_is_one_line_naming_the_extra(args, line):
    r = cli("solve", "What is 2 + 3?", *args)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines() == [line], r.stderr


def test_an_openai_spec_needs_no_engine():
    # nothing listens on port 9: the error is the server's, after the spec was accepted without torch
    r = cli("solve", "What is 2 + 3?", "--router", "draft-only", "--draft",
            "openai:m?base_url=http://127.0.0.1:9/v1&retries=0")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1].startswith("specstep: error: server http://127.0.0.1:9 is unavailable")


def test_serve_without_fastapi_is_one_line_naming_the_extra():
    r = cli("serve", "--port", "0", "--router", "draft-only", blocked=(*ENGINES, "fastapi", "uvicorn"))
    assert r.returncode == 2, r.stderr
    line = 'specstep: error: specstep serve needs fastapi, which is not installed: pip install "specstep[serve]"'
    assert r.stderr.strip().splitlines() == [line], r.stderr


def _pyproject() -> dict:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_the_extras_hang_together():
    from packaging.requirements import Requirement

    project = _pyproject()["project"]
    extras = project["optional-dependencies"]
    assert {"transformers", "llamacpp", "vllm", "serve", "eval", "train", "dev", "all"} <= set(extras)
    core = [Requirement(r) for r in project["dependencies"]]
    assert not [str(r) for r in core if any(s.operator in ("==", "===") for s in r.specifier)]
    assert not {"torch", "transformers", "llama-cpp-python", "vllm"} & {r.name for r in core}
    assert "openai" in {r.name for r in core}  # the OpenAI-compatible backend is core
    assert {"fastapi", "uvicorn"} <= {Requirement(r).name for r in extras["serve"]}
    for name, reqs in extras.items():
        for req in map(Requirement, reqs):
            if req.name == project["name"]:  # an extra made of other extras: each must exist
                assert req.extras and req.extras <= set(extras) - {name}, (name, str(req))
    (everything,) = map(Requirement, extras["all"])
    assert everything.extras == set(extras) - {"all", "vllm"}


def test_each_package_is_typed():
    data = _pyproject()["tool"]["setuptools"]["package-data"]
    for pkg in PACKAGES:
        assert (ROOT / pkg / "py.typed").is_file()
        assert "py.typed" in data[pkg]
