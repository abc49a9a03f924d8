"""The testbed pair: SmolLM2-135M-Instruct fine-tuned on the synthetic task (``testbed-target``), and
its first few layers fine-tuned the same way (``testbed-draft``, LayerSkip-style: a much cheaper draft
from the same weights). The repo ships only LoRA adapters (``reasoning/data/testbed/*``); on first
load they are checked against their manifest, merged into the packaged base weights, and the merged
copy is cached in the user cache, so later loads take seconds.

Adapter folder: ``manifest.json`` (an :class:`AdapterManifest`) and ``adapter.safetensors`` (for each
adapted linear layer ``W`` of shape [out, in], ``NAME.lora_A`` [r, in] and ``NAME.lora_B`` [out, r];
merged as ``W + alpha / r * B @ A``; tensors listed in ``replace`` overwrite the base tensor). No
code is ever loaded from these files.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from reasoning.errors import ModelSpecError

log = logging.getLogger(__name__)

DATA_DIR = Path(__file__).parent / "data" / "testbed"
ADAPTER_FILE, MANIFEST_FILE = "adapter.safetensors", "manifest.json"
MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class AdapterManifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: Literal["specstep-lora"] = "specstep-lora"
    version: int = 1
    name: str
    base: str = Field(description="model spec of the base weights, e.g. smollm2-135m")
    layers: int | None = Field(None, ge=1, description="keep only the first N decoder layers (the draft)")
    rank: int = Field(ge=1)
    alpha: float
    modules: list[str]
    replace: list[str] = Field(default_factory=list, description="base tensors the adapter file replaces")
    sha256: str = Field(description="sha256 of adapter.safetensors")
    few_shot: int = Field(0, ge=0, le=3, description="worked examples in the prompt it was trained with")
    trained: dict[str, str | int | float] = Field(default_factory=dict, description="provenance")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def adapter_dir(name: str, override: str | None = None) -> Path:
    return Path(override).expanduser() if override else DATA_DIR / name.removeprefix("testbed-")


def read_manifest(folder: Path) -> AdapterManifest:
    """The manifest of an adapter folder, checked against the adapter file; one-line errors."""
    mpath, apath = folder / MANIFEST_FILE, folder / ADAPTER_FILE
    if not mpath.is_file() or not apath.is_file():
        missing = mpath if not mpath.is_file() else apath
        raise ModelSpecError(f"testbed adapter file missing: {missing} (rebuild with `specstep testbed train`)")
    try:
        manifest = AdapterManifest.model_validate_json(mpath.read_text())
    except (ValidationError, UnicodeDecodeError) as e:
        raise ModelSpecError(f"testbed adapter manifest {mpath} is invalid: {str(e).splitlines()[0]}") from None
    digest = sha256_file(apath)
    if digest != manifest.sha256:
        raise ModelSpecError(f"testbed adapter {apath} does not match its manifest (sha256 {digest[:12]}..., "
                             f"expected {manifest.sha256[:12]}...): the file was changed or damaged")
    return manifest


def truncate_layers(model, n: int) -> None:
    """Keep the first `n` decoder layers (LayerSkip-style early exit through the final norm and head)."""
    layers = model.model.layers
    if n > len(layers):
        raise ModelSpecError(f"cannot keep {n} layers of a model with {len(layers)}")
    model.model.layers = layers[:n]
    model.config.num_hidden_layers = n
    for attr in ("layer_types",):
        if getattr(model.config, attr, None) is not None:
            setattr(model.config, attr, list(getattr(model.config, attr))[:n])


def merge_adapter(model, manifest: AdapterManifest, tensors: dict) -> None:
    """Merge LoRA factors (and replaced tensors) into `model` in place."""
    import torch

    params = dict(model.named_parameters())
    scale = manifest.alpha / manifest.rank
    with torch.no_grad():
        for key, a in tensors.items():
            if not key.endswith(".lora_A"):
                continue
            name = key[: -len(".lora_A")]
            b = tensors.get(name + ".lora_B")
            w = params.get(name + ".weight")
            if b is None or w is None or tuple(w.shape) != (b.shape[0], a.shape[1]):
                raise ModelSpecError(f"testbed adapter {manifest.name}: tensor {name} does not fit the base model")
            w += scale * (b.float() @ a.float()).to(w.dtype)
        for name in manifest.replace:
            if name not in params or name not in tensors or params[name].shape != tensors[name].shape:
                raise ModelSpecError(f"testbed adapter {manifest.name}: tensor {name} does not fit the base model")
            params[name].copy_(tensors[name].to(params[name].dtype))


def build(name: str, folder: Path, manifest: AdapterManifest, base_dir: Path, cache: Path) -> Path:
    """The merged model directory for testbed alias `name`: the adapter in `folder` merged into the base
    weights in `base_dir` (built once into `cache`; the key covers both)."""
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    key = hashlib.sha256(f"{manifest.sha256}/{base_dir.name}".encode()).hexdigest()[:16]
    out = cache / "hf" / f"{name}-{key}"
    if (out / ".complete").is_file():
        return out
    log.warning("building %s from %s and its adapter (once; cached in %s)", name, base_dir, out)
    model = AutoModelForCausalLM.from_pretrained(base_dir)
    tok = AutoTokenizer.from_pretrained(base_dir)
    if manifest.layers is not None:
        truncate_layers(model, manifest.layers)
    merge_adapter(model, manifest, load_file(str(folder / ADAPTER_FILE)))
    tmp = out.with_name(f"{out.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    (tmp / "specstep-testbed.json").write_text(json.dumps(manifest.model_dump(), indent=1))
    (tmp / ".complete").write_text(str(folder))
    try:
        os.replace(tmp, out)
    except OSError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
    return out
