"""The testbed pair: SmolLM2-135M-Instruct fine-tuned on the synthetic task (``testbed-target``), and
its first few layers fine-tuned the same way (``testbed-draft``, LayerSkip-style: a much cheaper draft
from the same weights). The repo ships only LoRA adapters (``reasoning/data/testbed/*``); on first
load they are checked against their manifest, merged into the packaged base weights, and the merged
copy is cached in the user cache, so later loads take seconds.

Adapter folder: ``manifest.json`` (an :class:`AdapterManifest`) and the safetensors files it lists,
each under 4 MB (for each adapted linear layer ``W`` of shape [out, in], ``NAME.lora_A`` [r, in] and
``NAME.lora_B`` [out, r], stored as int8 with one float32 scale per rank component in ``NAME.lora_A.scale``
[r, 1] and ``NAME.lora_B.scale`` [1, r]; merged as ``W + alpha / r * B @ A``; tensors listed in
``replace`` overwrite the base tensor; ``head.vocab``, when present, lists the token ids the model's
output head keeps). No code is ever loaded from these files.
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
MANIFEST_FILE, SHARD_BYTES = "manifest.json", 4_000_000
HEAD_VOCAB, INFO_FILE = "head.vocab", "specstep-testbed.json"
MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class AdapterManifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: Literal["specstep-lora"] = "specstep-lora"
    version: Literal[2] = 2
    name: str
    base: str = Field(description="model spec of the base weights, e.g. smollm2-135m")
    layers: int | None = Field(None, ge=1, description="keep only the first N decoder layers (the draft)")
    rank: int = Field(ge=1)
    alpha: float
    modules: list[str]
    replace: list[str] = Field(default_factory=list, description="base tensors the adapter file replaces")
    files: dict[str, str] = Field(min_length=1, description="adapter files (safetensors) and their sha256")
    head_vocab: int | None = Field(None, ge=1, description="the output head keeps only this many token ids "
                                   "(FR-Spec-style; their ids are the tensor head.vocab)")
    few_shot: int = Field(0, ge=0, le=3, description="worked examples in the prompt it was trained with")
    step_style: Literal["short", "written"] = Field("short", description="how the gold steps it was trained on "
                                                    "are written (eval.synthetic.STYLES)")
    trained: dict[str, str | int | float] = Field(default_factory=dict, description="provenance")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def adapter_dir(name: str, override: str | None = None) -> Path:
    return Path(override).expanduser() if override else DATA_DIR / name.removeprefix("testbed-")


def base_spec(folder: Path, manifest: AdapterManifest) -> str:
    """The model spec an adapter in `folder` merges into. A pair is trained and kept together (DIR/target,
    DIR/draft), so a base that is the other testbed alias means that alias's adapter beside this one."""
    if not manifest.base.startswith("testbed-"):
        return manifest.base
    sibling = folder.parent / manifest.base.removeprefix("testbed-")
    if not (sibling / MANIFEST_FILE).is_file():
        raise ModelSpecError(f"testbed adapter {folder} is trained on {manifest.base}: its adapter must be beside "
                             f"it, in {sibling}")
    return f"{manifest.base}?adapter={sibling}"


def adapter_key(manifest: AdapterManifest) -> str:
    """One digest for all of an adapter's files."""
    return hashlib.sha256(json.dumps(manifest.files, sort_keys=True).encode()).hexdigest()


def _missing(path: Path) -> ModelSpecError:
    return ModelSpecError(f"testbed adapter file missing: {path} (rebuild with `specstep testbed train`)")


def read_manifest(folder: Path) -> AdapterManifest:
    """The manifest of an adapter folder, checked against the adapter files; one-line errors."""
    mpath = folder / MANIFEST_FILE
    if not mpath.is_file():
        raise _missing(mpath)
    try:
        manifest = AdapterManifest.model_validate_json(mpath.read_text())
    except (ValidationError, UnicodeDecodeError) as e:
        raise ModelSpecError(f"testbed adapter manifest {mpath} is invalid: {str(e).splitlines()[0]}") from None
    for name, want in manifest.files.items():
        apath = folder / name
        if Path(name).name != name or apath.suffix != ".safetensors":
            raise ModelSpecError(f"testbed adapter manifest {mpath} names a file that is not a "
                                 f"safetensors file in its folder: {name!r}")
        if not apath.is_file():
            raise _missing(apath)
        digest = sha256_file(apath)
        if digest != want:
            raise ModelSpecError(f"testbed adapter {apath} does not match its manifest (sha256 {digest[:12]}..., "
                                 f"expected {want[:12]}...): the file was changed or damaged")
    return manifest


def load_tensors(folder: Path, manifest: AdapterManifest) -> dict:
    """All tensors of an adapter, int8 factors turned back into float32 by their scales."""
    from safetensors.torch import load_file

    tensors = {}
    for name in manifest.files:
        tensors.update(load_file(str(folder / name)))
    for key in [k for k in tensors if k.endswith(".scale")]:
        scale, base = tensors.pop(key), key.removesuffix(".scale")
        tensors[base] = tensors[base].float() * scale.float()
    return tensors


def prune_head(model, ids) -> None:
    """Replace the output head by one over the token ids `ids` only (FR-Spec, 2502.14856): the head's
    matrix multiply shrinks from the whole vocabulary to these rows; every other token gets logit
    -1e4 (probability 0), so sampling, log-probabilities and entropies keep their meaning."""
    import torch

    class PrunedHead(torch.nn.Module):
        def __init__(self, weight: torch.Tensor, ids: torch.Tensor, vocab: int):
            super().__init__()
            self.weight = torch.nn.Parameter(weight[ids].clone(), requires_grad=False)
            self.register_buffer("ids", ids)
            self.out_features = vocab  # the logits' size, as nn.Linear's

        def forward(self, h: torch.Tensor) -> torch.Tensor:
            small = h @ self.weight.t()
            return small.new_full((*small.shape[:-1], self.out_features), -1e4).index_copy_(-1, self.ids, small)

    head = model.get_output_embeddings()
    ids = torch.as_tensor(ids, dtype=torch.long)
    if ids.numel() == 0 or int(ids.min()) < 0 or int(ids.max()) >= head.weight.shape[0]:
        raise ModelSpecError(f"testbed head vocabulary does not fit a vocabulary of {head.weight.shape[0]}")
    model.config.tie_word_embeddings = False
    model.lm_head = PrunedHead(head.weight.detach(), ids, head.weight.shape[0])


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
    weights in `base_dir` (built once into `cache`; the key covers both). A pruned head's token ids go
    into its ``specstep-testbed.json``; :func:`apply_head` applies them after loading."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    key = hashlib.sha256(f"{adapter_key(manifest)}/{base_dir.name}".encode()).hexdigest()[:16]
    out = cache / "hf" / f"{name}-{key}"
    if (out / ".complete").is_file():
        return out
    log.warning("building %s from %s and its adapter (once; cached in %s)", name, base_dir, out)
    model = AutoModelForCausalLM.from_pretrained(base_dir)
    tok = AutoTokenizer.from_pretrained(base_dir)
    if manifest.layers is not None:
        truncate_layers(model, manifest.layers)
    tensors = load_tensors(folder, manifest)
    vocab = tensors.pop(HEAD_VOCAB, None)
    if (vocab is None) != (manifest.head_vocab is None) or (vocab is not None and len(vocab) != manifest.head_vocab):
        raise ModelSpecError(f"testbed adapter {manifest.name}: head.vocab does not match head_vocab in its manifest")
    merge_adapter(model, manifest, tensors)
    tmp = out.with_name(f"{out.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    info = {**manifest.model_dump(), "head_vocab_ids": None if vocab is None else vocab.tolist()}
    (tmp / INFO_FILE).write_text(json.dumps(info, indent=1))
    (tmp / ".complete").write_text(str(folder))
    try:
        os.replace(tmp, out)
    except OSError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def apply_head(model, merged: Path) -> None:
    """Prune `model`'s output head if the merged testbed copy in `merged` says so."""
    ids = json.loads((merged / INFO_FILE).read_text()).get("head_vocab_ids")
    if ids:
        prune_head(model, ids)
