"""Process reward models (PRMs) through transformers: a trained model scores each reasoning step.

Two head styles, chosen by `PRMSpec.style`:

* "classification" (Qwen2.5-Math-PRM): the model gives per-token logits over 2 classes. Every step
  is followed by a separator token ("<extra_0>" by default) and the step's score is
  softmax(logits at that separator)[positive_label]. Built-in transformers models load through
  `AutoModelForTokenClassification` (num_labels=2); checkpoints with their own modelling code (Qwen's
  `Qwen2ForProcessRewardModel`) load through `AutoModel` with `trust_remote_code=true`.
* "value" (Skywork-o1-Open-PRM-like): a scalar value head (`AutoModelForTokenClassification` with
  num_labels=1). Every step, the last one included, is followed by the separator ("\\n\\n" by
  default) and the step's score is sigmoid(value at that separator), as RSD's own code reads it (its
  tau of 0.7 was tuned on that reading).

The input is laid out as: a head (the question), then the steps in order, the judged step last.

* head, plain format: the tokenizer's BOS token (when it has one), then `question + "\\n"`;
* head, chat format: the chat template rendered for [system (when `system` is not empty), user:
  question, assistant: ...], cut where the assistant's text begins. `chat` unset means: the chat
  format for the classification style when the tokenizer has a chat template (as Qwen2.5-Math-PRM
  expects), the plain format otherwise. Whatever the template puts after the assistant's text is
  left out: it cannot change the scores of a causal model.
* each step is stripped of surrounding whitespace and tokenized on its own, as are the head and the
  separator, so that token boundaries never straddle two pieces and a step's score does not depend
  on the steps after it: `score_steps(q, steps)[k]` equals the score of step k judged after
  `steps[:k]`.

PRMs here keep no KV session: every call runs the whole prefix (head and all steps) through the
model again, and reports all of those tokens as the judge's input tokens. When the input is longer
than `max_tokens`, the oldest previous steps are left out (the question stays); if the question and
the judged step alone are too long, only their last `max_tokens` tokens are run.

Options come from `--judge-opt key=value`, so strings are accepted and converted ("true"/"false",
numbers); in `step_separator`, the escapes \\n and \\t stand for newline and tab.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from reasoning.backends.base import count_params, usage
from reasoning.errors import ConfigError, ModelSpecError

if TYPE_CHECKING:
    from reasoning.context import StepContext

log = logging.getLogger(__name__)

Style = Literal["classification", "value"]
DEFAULT_SEPARATOR: dict[str, str] = {"classification": "<extra_0>", "value": "\n\n"}
# Qwen2.5-Math-PRM's system prompt (used in the chat format only).
DEFAULT_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."
_MARK = "\x00SPECSTEP-PRM-STEPS\x00"


class PRMSpec(BaseModel):
    """What `PRMJudge` loads and how it lays out its input (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")

    model: str  # a local directory holding the PRM (config, weights, tokenizer)
    style: Style
    step_separator: str | None = None  # None: "<extra_0>" (classification) or "\n\n" (value)
    positive_label: int = Field(1, ge=0)  # classification: the class whose probability is the score
    trust_remote_code: bool = False  # load with AutoModel and the checkpoint's own code
    max_tokens: int = Field(4096, ge=8)  # longest input run through the model
    chat: bool | None = None  # None: chat format for classification when the tokenizer has a template
    system: str = DEFAULT_SYSTEM  # system message in the chat format ("" for none)
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    device: str = Field("cpu", pattern=r"^(cpu|cuda(:\d+)?|mps)$")  # where the PRM runs

    @field_validator("step_separator")
    @classmethod
    def _unescape(cls, v: str | None) -> str | None:
        if v is None:
            return v
        v = v.replace("\\n", "\n").replace("\\t", "\t")
        if not v:
            raise ValueError("must not be empty")
        return v

    @property
    def separator(self) -> str:
        return self.step_separator if self.step_separator is not None else DEFAULT_SEPARATOR[self.style]


def _spec_error(e: ValidationError) -> ConfigError:
    err = e.errors()[0]
    field = ".".join(str(p) for p in err["loc"]) or "options"
    if err["type"] == "missing":
        what = "a local PRM directory" if field == "model" else "'classification' or 'value'"
        return ConfigError(f"judge 'prm' needs option {field}=<{what}>")
    if err["type"] == "extra_forbidden":
        return ConfigError(f"judge 'prm' has no option {field!r}: use one of {', '.join(PRMSpec.model_fields)}")
    return ConfigError(f"judge 'prm': bad option {field}={err.get('input')!r}: {err['msg']}")


# (resolved path, style, trust_remote_code, dtype, device) -> (model, tokenizer); models are loaded once.
_MODELS: dict[tuple[str, str, bool, str, str], tuple[Any, Any]] = {}


def _check_labels(n: int, spec: PRMSpec, where: str) -> None:
    if spec.style == "value" and n != 1:
        raise ModelSpecError(f"judge 'prm': style 'value' needs a head with 1 label, but {where} has {n}"
                             f"{' (use style=classification)' if n == 2 else ''}")
    if spec.style == "classification":
        if n != 2:
            raise ModelSpecError(f"judge 'prm': style 'classification' needs a head with 2 labels, but {where} "
                                 f"has {n}{' (use style=value)' if n == 1 else ''}")
        if spec.positive_label >= n:
            raise ConfigError(f"judge 'prm': positive_label={spec.positive_label} but {where} has only {n} labels")


def load_prm(spec: PRMSpec) -> tuple[Any, Any]:
    """The PRM's model (eval mode, on `spec.device`) and tokenizer, loaded once per process."""
    path = Path(spec.model).expanduser()
    if not path.exists():
        raise ModelSpecError(f"judge 'prm': model directory not found: {spec.model}")
    if not path.is_dir():
        raise ModelSpecError(f"judge 'prm': model must be a directory, not a file: {spec.model}")
    if not (path / "config.json").is_file():
        raise ModelSpecError(f"judge 'prm': no model in directory {spec.model} (config.json is missing)")
    key = (str(path.resolve()), spec.style, spec.trust_remote_code, spec.dtype, spec.device)
    if key in _MODELS:
        return _MODELS[key]

    from transformers import AutoConfig, AutoModel, AutoModelForTokenClassification, AutoTokenizer

    t0 = time.perf_counter()
    remote = spec.trust_remote_code
    try:
        if not remote:  # check the head before reading the weights
            _check_labels(AutoConfig.from_pretrained(path).num_labels, spec, f"model {spec.model}")
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=remote)
        loader = AutoModel if remote else AutoModelForTokenClassification
        kwargs: dict[str, Any] = {"trust_remote_code": True} if remote else {}
        model = loader.from_pretrained(path, dtype=spec.dtype, **kwargs)
    except (OSError, ValueError, KeyError, ImportError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ModelSpecError(f"judge 'prm': cannot load model {spec.model}: {first}") from None
    model.to(spec.device).eval()
    if remote:  # a checkpoint's own head may ignore config.num_labels: look at one token's output
        with torch.inference_mode():
            one = torch.zeros((1, 1), dtype=torch.long, device=spec.device)
            _check_labels(_label_count(model(input_ids=one)), spec, f"the output of model {spec.model}")
    log.info("loaded PRM %s (%s, %s) in %.1fs", spec.model, spec.style, type(model).__name__,
             time.perf_counter() - t0)
    _MODELS[key] = (model, tok)
    return model, tok


def _label_count(out: Any) -> int:
    t = _logits(out)
    return 1 if t.dim() == 2 else int(t.shape[-1])


def _logits(out: Any) -> torch.Tensor:
    """The per-token head output of a forward pass: `out.logits`, else its first tensor."""
    t = getattr(out, "logits", None)
    if t is None:
        if isinstance(out, torch.Tensor):
            t = out
        else:
            seq = out.to_tuple() if hasattr(out, "to_tuple") else out
            t = next((x for x in seq if isinstance(x, torch.Tensor)), None)
    if t is None:
        raise ModelSpecError("judge 'prm': the model's forward pass returned no logits tensor")
    return t


class PRMJudge:
    """A process reward model as a judge. `PRMJudge(model=DIR, style="classification" | "value", ...)`
    takes the fields of `PRMSpec` as keyword options (strings are converted) or a ready `spec`."""

    name = "prm"

    def __init__(self, spec: PRMSpec | None = None, **options: Any):
        if spec is None:
            try:
                spec = PRMSpec(**options)
            except ValidationError as e:
                raise _spec_error(e) from None
        elif options:
            raise ConfigError(f"judge 'prm': give either spec or options, not both ({', '.join(options)})")
        self.spec = spec
        self.model, self.tokenizer = load_prm(spec)
        if not spec.trust_remote_code:
            _check_labels(self.model.config.num_labels, spec, f"model {spec.model}")
        tok = self.tokenizer
        has_template = bool(getattr(tok, "chat_template", None))
        if spec.chat and not has_template:
            raise ConfigError(f"judge 'prm': chat=true but the tokenizer of {spec.model} has no chat template")
        self.chat = (has_template and spec.style == "classification") if spec.chat is None else spec.chat
        self.separator_ids = self._encode(spec.separator)
        if spec.style == "classification" and len(self.separator_ids) != 1:
            raise ConfigError(f"judge 'prm': step_separator {spec.separator!r} is {len(self.separator_ids)} tokens "
                              f"for the tokenizer of {spec.model}; a classification PRM reads each score at one "
                              f"separator token (set step_separator to the one the PRM was trained with)")
        self._heads: dict[str, list[int]] = {}
        self._warned = False

    def __str__(self) -> str:
        return f"prm({Path(self.spec.model).name}, {self.spec.style})"

    # ---------------------------------------------------------------- input layout

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def head_ids(self, question: str) -> list[int]:
        """Token ids before the first step (see the module docstring)."""
        ids = self._heads.get(question)
        if ids is not None:
            return ids
        tok = self.tokenizer
        if self.chat:
            msgs = [{"role": "system", "content": self.spec.system}] if self.spec.system else []
            msgs += [{"role": "user", "content": question}, {"role": "assistant", "content": _MARK}]
            try:
                text = tok.apply_chat_template(msgs, tokenize=False)
            except Exception as e:  # templates raise arbitrary errors (e.g. no system role)
                raise ConfigError(f"judge 'prm': the chat template of {self.spec.model} failed ({e}); "
                                  f"use chat=false or system=") from None
            cut = text.find(_MARK)
            if cut < 0:
                raise ConfigError(f"judge 'prm': the chat template of {self.spec.model} drops the assistant's text; "
                                  f"use chat=false")
            ids = self._encode(text[:cut])
        else:
            bos = tok.bos_token_id
            ids = ([bos] if bos is not None else []) + self._encode(question + "\n")
        if len(self._heads) > 64:
            self._heads.clear()
        self._heads[question] = ids
        return ids

    def _layout(self, head: list[int], steps: list[list[int]]) -> tuple[list[int], list[int]]:
        """Token ids of head + steps, and the position whose head output scores each step."""
        ids, positions = list(head), []
        for step in steps:  # both styles read the score at the separator after each step
            ids += step + self.separator_ids
            positions.append(len(ids) - 1)
        return ids, positions

    def build_inputs(self, question: str, steps: list[str]) -> tuple[list[int], list[int]]:
        """The full input for `steps` (no `max_tokens` cap) and the scoring position of each step."""
        return self._layout(self.head_ids(question), [self._encode(s.strip()) for s in steps])

    def _fit_last(self, head: list[int], steps: list[list[int]]) -> tuple[list[int], list[int]]:
        """Input scoring only the last step, within max_tokens (oldest context steps left out)."""
        cap = self.spec.max_tokens
        first = 0
        ids, pos = self._layout(head, steps)
        while len(ids) > cap and first < len(steps) - 1:
            first += 1
            ids, pos = self._layout(head, steps[first:])
        cut = max(0, len(ids) - cap)
        if cut:
            ids, pos = ids[cut:], [p - cut for p in pos]
        if first or cut:
            level = logging.DEBUG if self._warned else logging.WARNING
            log.log(level, "PRM input over max_tokens=%d: left out %d earlier step(s) and the first %d token(s)",
                    cap, first, cut)
            self._warned = True
        return ids, pos[-1:]

    # ---------------------------------------------------------------- scoring

    @torch.inference_mode()
    def _run(self, ids: list[int], positions: list[int]) -> list[float]:
        x = torch.tensor([ids], dtype=torch.long, device=self.spec.device)
        out = self.model(input_ids=x, attention_mask=torch.ones_like(x))
        logits = _logits(out).cpu()
        if logits.dim() == 2:  # [1, T]: a scalar head without the label axis
            logits = logits.unsqueeze(-1)
        _check_labels(int(logits.shape[-1]), self.spec, f"the output of model {self.spec.model}")
        at = logits[0, positions].float()
        if self.spec.style == "classification":
            scores = torch.softmax(at, dim=-1)[:, self.spec.positive_label]
        else:
            scores = torch.sigmoid(at[:, 0])
        return [min(1.0, max(0.0, float(s))) for s in scores]

    def _pass(self, ids: list[int], positions: list[int], ctx: StepContext | None, t0: float) -> list[float]:
        scores = self._run(ids, positions)
        if ctx is not None:
            if not hasattr(self, "_params"):
                self._params = count_params(self.model)
            ctx.report("judge", usage(self._params, len(ids), seconds=time.perf_counter() - t0))
        return scores

    def score_steps(self, question: str, steps: list[str], ctx: StepContext | None = None) -> list[float]:
        """The score of every step, each judged after the steps before it: one forward pass when the
        whole input fits `max_tokens`, else one for the steps that fit and one per step after them.
        With `ctx`, each pass is reported as a "judge" call."""
        if not steps:
            return []
        t0 = time.perf_counter()
        head = self.head_ids(question)
        enc = [self._encode(s.strip()) for s in steps]
        ids, positions = self._layout(head, enc)
        fit = sum(p < self.spec.max_tokens for p in positions)  # steps whose score lies within the cap
        if fit == len(steps):
            return self._pass(ids, positions, ctx, t0)
        scores = self._pass(ids[: positions[fit - 1] + 1], positions[:fit], ctx, t0) if fit else []
        for k in range(fit, len(steps)):
            t0 = time.perf_counter()
            scores += self._pass(*self._fit_last(head, enc[: k + 1]), ctx, t0)
        return scores

    def score_text(self, question: str, previous: list[str], step_text: str,
                   ctx: StepContext | None = None) -> float:
        """The score of `step_text` after `previous` steps (one forward pass over the whole prefix)."""
        t0 = time.perf_counter()
        enc = [self._encode(s.strip()) for s in [*previous, step_text]]
        return self._pass(*self._fit_last(self.head_ids(question), enc), ctx, t0)[0]

    def score(self, ctx: StepContext, step_text: str) -> float:
        return self.score_text(ctx.problem.question, [s.text for s in ctx.steps], step_text, ctx)
