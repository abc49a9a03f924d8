"""OpenAI-compatible backend: any server with a `/v1/completions` endpoint (vLLM, SGLang, llama.cpp).

Sessions are `PrefixSession`s: each call sends the whole context as text; the server's prefix cache
serves what it has seen. Steps need stop strings and per-token logprobs, the judge needs top logprobs
of the next token, and scoring a continuation needs the prompt's logprobs (`echo`), which not every
server returns, or returns right: before the first scoring call on a server, a probe checks that echoed
logprobs are the model's (llama-cpp-python's server gives each prompt token the next one's); where they
are missing or wrong, scoring fails with a clear error.

Spec: ``openai:MODEL?base_url=http://127.0.0.1:8000/v1&tokenizer=smollm2-135m``. Options:

- ``base_url``: one URL, or several separated by ``|`` for failover: every session uses the first URL
  that has not failed; a request that cannot connect to its URL (or times out) goes to the next one,
  which serves that URL's sessions from then on. To spread load over replicas, put a router in front of
  them (vLLM's `vllm-router`, SGLang's router) and give its URL. Default $OPENAI_BASE_URL.
- ``session_header``: the HTTP header carrying each session's key, sent with every request of the
  session: the solve's (a random id per solve, `SOLVE_KEY`; its own outside a solve), so that a router
  hashing it (`vllm-router --policy consistent_hash` reads X-Session-ID) keeps a solve's requests, and
  its prefix cache, on one replica. Default X-Session-ID; empty: none.
- ``api_key_env``: the environment variable holding the API key (default OPENAI_API_KEY; none is fine).
- ``tokenizer``: a bundled alias or transformers directory whose tokenizer matches the served model:
  its chat template formats the prompt and it counts tokens. Without it the plain prompt format is
  used and tokens are counted by the server's /tokenize endpoint, or estimated (4 characters a token).
- ``chat=0|1``, ``timeout`` (seconds per request, default 120), ``retries`` (default 3), ``top_logprobs``
  (default 20).

Requests go through the official `openai` SDK: one client per backend (its replicas share one pool of
keep-alive connections), the spec's timeout, and the typed `completions` / `chat.completions` calls with
`extra_body` for the servers' own options (vLLM's ignore_eos, prompt_logprobs, continue_final_message,
add_generation_prompt). The SDK's own retries are off (max_retries=0): ours retry only connection errors,
timeouts, 429 and 5xx, with exponential backoff (0.25 s doubling, at most 8 s) and a `retried` count; then
one error names the server and the last failure. Entropies are over the top logprobs the server returns
(a lower bound of the full entropy).
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import openai

from reasoning.backends.base import SOLVE_KEY, Sampling, chat_turn_markers, tokenizer_key
from reasoning.backends.prefix import Completion, PrefixSession, entropy_from_top, generate_many, render_prompt
from reasoning.batching import LOCKSTEP
from reasoning.errors import BackendUnavailableError, ModelSpecError, SpecstepError
from reasoning.prompts import Prompt
from reasoning.specs import ModelSpec

log = logging.getLogger(__name__)


# A text whose next token every language model is sure of, and how far (nats) the logprob the server echoes
# for that token may be from the one it generated it with (prefill and decoding round differently).
ECHO_PROBE, ECHO_TOLERANCE = "The capital of France is", 1.0


def _sampled(body: dict[str, Any], sampling: Sampling | None, ignore_eos: bool) -> tuple[dict, dict | None]:
    """A request's body with top_p (standard), and its extra fields: top_k and min_p, ignore_eos (the
    extensions vLLM, SGLang and llama.cpp's server take)."""
    on = sampling.fields() if sampling is not None else {}
    if "top_p" in on:
        body["top_p"] = on.pop("top_p")
    extra = on | ({"ignore_eos": True} if ignore_eos else {})
    return body, extra or None

class ServerError(SpecstepError):
    """The server answered, but not with what was asked (4xx, a missing field, an unsupported feature)."""


class OpenAIBackend:
    def __init__(self, spec: ModelSpec):
        self.spec = spec
        self.n_params = int(spec.number("params", 0, 0))  # for FLOPs estimates; the server does not tell
        o = spec.options
        base = o.get("base_url") or os.environ.get("OPENAI_BASE_URL")
        if not base:
            raise ModelSpecError(f"model spec {str(spec)!r} names no server: add ?base_url=http://HOST:PORT/v1 "
                                 "or set OPENAI_BASE_URL")
        self.urls = [u.strip().rstrip("/") for u in base.split("|") if u.strip()]
        for u in self.urls:
            if not u.startswith(("http://", "https://")):
                raise ModelSpecError(f"model spec {str(spec)!r}: base_url {u!r} is not an http(s) URL")
        self._failed: dict[str, str] = {}  # url -> the url that serves its sessions since it failed
        self.session_header = o.get("session_header", "X-Session-ID")
        self.api_key = os.environ.get(o.get("api_key_env", "OPENAI_API_KEY"), "")
        self.timeout = spec.number("timeout", 120.0, 0.001)
        self.retries = int(spec.number("retries", 3, 0))
        # One SDK client; each replica's copy shares its connection pool. Without a key no Authorization
        # header is sent (the SDK wants some key, so it gets a placeholder it never sends).
        client = openai.OpenAI(api_key=self.api_key or "unused", base_url=self.urls[0], timeout=self.timeout,
                               max_retries=0)
        self._client = client
        self._clients = {u: client if u == self.urls[0] else client.with_options(base_url=u) for u in self.urls}
        self._headers: dict[str, Any] = {} if self.api_key else {"Authorization": openai.Omit()}
        self.top_k = int(spec.number("top_logprobs", 20, 1))
        self.tokenizer = None
        if o.get("tokenizer"):
            from reasoning.backends import missing_module

            lacking = missing_module(("torch", "transformers"))
            if lacking is not None:
                raise BackendUnavailableError(f"model spec {str(spec)!r}: tokenizer= needs {lacking}, which is not "
                                              'installed: pip install "specstep[transformers]"')
            from transformers import AutoTokenizer

            from reasoning.backends.hf import transformers_dir

            try:
                self.tokenizer = AutoTokenizer.from_pretrained(str(transformers_dir(o["tokenizer"])))
            except (OSError, ValueError) as e:
                raise ModelSpecError(f"model spec {str(spec)!r}: cannot load tokenizer {o['tokenizer']!r}: "
                                     f"{str(e).splitlines()[0]}") from None
        # send each context as token ids (vLLM's server, llama.cpp's llama-server; not llama-cpp-python's)
        self.token_prompts = spec.flag("token_prompts", False)
        if self.token_prompts and self.tokenizer is None:
            raise ModelSpecError(f"model spec {str(spec)!r}: token_prompts=1 needs ?tokenizer=... (the served "
                                 "model's) to make the token ids")
        has_template = bool(getattr(self.tokenizer, "chat_template", None))
        self.chat = spec.flag("chat", has_template)
        if self.chat and not has_template:
            raise ModelSpecError(f"model spec {str(spec)!r}: chat=1 needs ?tokenizer=... with a chat template")
        self._lock = threading.Lock()
        self.in_flight = 0
        self.requests = 0
        self.retried = 0
        self._tokenize_route: str | None = None
        self._echo_right: dict[str, bool] = {}  # url -> what the echo probe found there
        self._one_choice: set[str] = set()  # urls found to answer n > 1 with one choice

    @property
    def name(self) -> str:
        return str(self.spec)

    def load(self) -> int:
        """Requests this process has in flight on the server(s)."""
        return self.in_flight

    generate_many = staticmethod(generate_many)  # steps after forked sessions (K samples: one request)

    # --- HTTP -----------------------------------------------------------------------------------
    def _headers_now(self) -> dict[str, Any]:
        """The headers of a request: the API key's (or none), and the calling session's key."""
        key = SOLVE_KEY.get()
        return self._headers | {self.session_header: key} if key and self.session_header else self._headers

    def live(self, url: str) -> str:
        """The URL that serves `url`'s sessions: itself, or where they went when it failed."""
        with self._lock:
            while url in self._failed:
                url = self._failed[url]
        return url

    def _fail_over(self, url: str, why: str) -> str:
        """Mark `url` failed; its sessions go to the next URL that has not failed (or stay, when none)."""
        with self._lock:
            if url in self._failed or url not in self.urls:
                return self._failed.get(url, url)
            i = self.urls.index(url)
            nxt = next((u for u in self.urls[i + 1:] + self.urls[:i] if u not in self._failed), None)
            if nxt is None:
                return url
            self._failed[url] = nxt
        log.warning("%s: %s failed (%s): its sessions go to %s from now on", self.name, url, why, nxt)
        return nxt

    def _request(self, url: str, path: str, send: Callable[[openai.OpenAI], Any]) -> dict[str, Any]:
        """`send(client)` with the SDK client of `url` (of the URL serving it since it failed; any client
        for other URLs), retried on connection errors, timeouts, 429 and 5xx, a failed connection on the
        next URL; the answer as the server's JSON object."""
        url = self.live(url)
        last = ""
        with self._lock:
            self.in_flight += 1
            self.requests += 1
        try:
            for attempt in range(self.retries + 1):
                if attempt:
                    self.retried += 1
                    time.sleep(min(8.0, 0.25 * 2 ** (attempt - 1)))
                client = self._clients.get(url, self._client)
                try:
                    with LOCKSTEP.elsewhere():
                        out = send(client)
                except openai.APIStatusError as e:
                    detail = _error_message(e)
                    if e.status_code == 429 or e.status_code >= 500:
                        last = f"HTTP {e.status_code}: {detail}"
                        continue
                    raise ServerError(f"{url}{path}: HTTP {e.status_code}: {detail}") from None
                except openai.APIConnectionError as e:  # timeouts too
                    last = str(e.__cause__ or e) or type(e.__cause__ or e).__name__
                    url = self._fail_over(url, last)
                    continue
                except json.JSONDecodeError:
                    raise ServerError(f"{url}{path}: the server's answer is not JSON") from None
                if isinstance(out, openai.BaseModel):  # exactly the fields the server sent
                    out = out.to_dict(mode="python")
                if not isinstance(out, dict):
                    raise ServerError(f"{url}{path}: the server's answer is not a JSON object")
                return out
            raise BackendUnavailableError(f"server {url} is unavailable after {self.retries + 1} tries: {last}")
        finally:
            with self._lock:
                self.in_flight -= 1

    def _post(self, url: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """A POST the SDK has no method for (url: any root, e.g. for /tokenize)."""
        return self._request(url, path, lambda c: c.post(url + path, body=body, cast_to=object,
                                                          options={"headers": self._headers_now()}))

    def _choices(self, url: str, body: dict[str, Any], extra: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """/completions' choices in index order, each with the answer's usage; `extra`: options beyond
        OpenAI's (vLLM's, llama.cpp's), sent as extra_body."""
        out = self._request(url, "/completions", lambda c: c.completions.create(
            model=self.spec.model, **body, extra_body=extra or None, extra_headers=self._headers_now()))
        choices = out.get("choices")
        if not isinstance(choices, list) or not choices or not all(isinstance(c, dict) for c in choices):
            raise ServerError(f"{url}/completions: answer has no choices")
        usage_ = out.get("usage") or {}
        return [c | {"usage": usage_, "logprobs": _legacy(c.get("logprobs"))}
                for c in sorted(choices, key=lambda c: c.get("index") or 0)]

    def _completion(self, url: str, body: dict[str, Any], extra: dict[str, Any] | None = None) -> dict[str, Any]:
        return self._choices(url, body, extra)[0]

    # --- text and tokens ------------------------------------------------------------------------
    def render(self, prompt: Prompt) -> str:
        return render_prompt(prompt, self.tokenizer, self.chat)

    def turn_markers(self) -> tuple[str, str] | None:
        return chat_turn_markers(self.tokenizer) if self.chat else None

    @functools.cached_property
    def vocab_key(self) -> str | None:
        """With a tokenizer, equal for two models exactly when their sessions can take each other's ids."""
        return tokenizer_key(self.tokenizer) if self.tokenizer is not None else None

    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=False)

    def count_tokens(self, text: str) -> int:
        if not text:
            return 0
        if self.tokenizer is not None:
            return len(self.encode(text))
        root = self.urls[0].rsplit("/v1", 1)[0]
        routes = [self._tokenize_route] if self._tokenize_route else ["/tokenize", "/extras/tokenize"]
        for route in routes:
            if route == "none":
                break
            body = {"model": self.spec.model, "prompt": text, "add_special_tokens": False} if route == "/tokenize" \
                else {"input": text}
            try:
                out = self._post(root, route, body)
                self._tokenize_route = route
                return int(out.get("count", len(out.get("tokens", []))))
            except (ServerError, ValueError, TypeError, AttributeError):  # no such endpoint here
                continue
        if self._tokenize_route != "none":
            log.warning("%s: no tokenizer and no /tokenize endpoint; estimating 4 characters a token", self.name)
            self._tokenize_route = "none"
        return max(1, math.ceil(len(text) / 4))

    def open_session(self, prompt: Prompt) -> OpenAISession:
        url = self.live(self.urls[0])
        if prompt.images:  # images travel as content parts of /v1/chat/completions
            text = "\n".join(m["content"] if isinstance(m["content"], str) else prompt.question
                             for m in prompt.messages())
            return OpenAISession(self, url, "", self.count_tokens(text), prompt)
        text = self.render(prompt)
        if self.token_prompts:
            ids = self.tokenizer(text, add_special_tokens=not self.chat)["input_ids"]
            return OpenAISession(self, url, text, len(ids), prompt_ids=ids)
        return OpenAISession(self, url, text, self.count_tokens(text))

    # --- images: chat completions with the answer so far as an assistant message to continue --------
    # (vLLM's extensions continue_final_message / add_generation_prompt / prompt_logprobs)
    def _chat(self, url: str, prompt: Prompt, assistant: str, body: dict[str, Any],
              extra: dict[str, Any] | None = None) -> dict[str, Any]:
        from reasoning.images import data_url

        msgs = []
        for m in prompt.messages():
            if isinstance(m["content"], list):
                it = iter(prompt.images)
                content = [{"type": "image_url", "image_url": {"url": data_url(next(it))}} if p["type"] == "image"
                           else p for p in m["content"]]
                msgs.append({"role": m["role"], "content": content})
            else:
                msgs.append(m)
        if assistant:
            msgs.append({"role": "assistant", "content": assistant})
        extra = {"continue_final_message": bool(assistant), "add_generation_prompt": not assistant, **(extra or {})}
        out = self._request(url, "/chat/completions", lambda c: c.chat.completions.create(
            model=self.spec.model, messages=msgs, **body, extra_body=extra, extra_headers=self._headers_now()))
        try:
            return out["choices"][0] | {"usage": out.get("usage") or {}, "prompt_logprobs": out.get("prompt_logprobs")}
        except (KeyError, IndexError, TypeError):
            raise ServerError(f"{url}/chat/completions: answer has no choices") from None

    def chat_complete(self, url: str, prompt: Prompt, assistant: str, *, max_tokens: int, stop: Sequence[str],
                      temperature: float, seed: int | None, ignore_eos: bool,
                      sampling: Sampling | None = None) -> Completion:
        body: dict[str, Any] = {"max_tokens": max(1, max_tokens), "temperature": temperature, "logprobs": True,
                                "top_logprobs": self.top_k, "stop": list(stop) or None}
        if seed is not None:
            body["seed"] = seed
        ch = self._chat(url, prompt, assistant, *_sampled(body, sampling, ignore_eos))
        text = (ch.get("message") or {}).get("content") or ""
        content = (ch.get("logprobs") or {}).get("content") or []
        lps = [c.get("logprob", -math.inf) for c in content]
        ents = [entropy_from_top([t["logprob"] for t in c.get("top_logprobs") or []]) for c in content]
        finish, matched = _finish(ch, text, stop)
        if matched is not None and not text.endswith(matched):
            text += matched
        return Completion(text, self.count_tokens(text) if self.tokenizer is not None else len(content), lps,
                          ents, finish, matched)

    def chat_continuation_logprobs(self, url: str, prompt: Prompt, assistant: str,
                                   continuation: str) -> tuple[list[int], list[float]]:
        ch = self._chat(url, prompt, assistant + continuation, {"max_tokens": 1, "temperature": 0.0},
                        {"prompt_logprobs": 0})
        rows = ch.get("prompt_logprobs")
        if not rows:
            raise ServerError(f"{url}: the server returns no prompt logprobs for chat requests (vLLM's "
                              f"prompt_logprobs), so {self.name} cannot score text about images")
        picked, covered = [], 0
        for row in reversed(rows):  # the continuation is the prompt's last tokens (nothing follows it)
            if covered >= len(continuation) or not row:
                break
            tok, info = next(iter(row.items()))
            picked.append((int(tok), info.get("logprob", -math.inf)))
            covered += len(info.get("decoded_token") or "")
        picked.reverse()
        return [t for t, _ in picked], [v for _, v in picked]

    def chat_top_logprobs(self, url: str, prompt: Prompt, assistant: str) -> dict[str, float]:
        """The top-k next tokens after the assistant's partial message, with their log-probabilities."""
        ch = self._chat(url, prompt, assistant, {"max_tokens": 1, "temperature": 0.0, "logprobs": True,
                                                 "top_logprobs": self.top_k})
        content = (ch.get("logprobs") or {}).get("content") or []
        if not content or not content[0].get("top_logprobs"):
            raise ServerError(f"{url}: the server returned no top logprobs, which the judge needs")
        return {t["token"]: t["logprob"] for t in content[0]["top_logprobs"]}

    def chat_candidate_logprobs(self, url: str, prompt: Prompt, assistant: str,
                                candidates: Sequence[str]) -> dict[str, float]:
        top = self.chat_top_logprobs(url, prompt, assistant)
        floor = min(top.values())
        return {c: top.get(c, floor) for c in candidates}

    # --- the three calls a session makes ---------------------------------------------------------
    def _body(self, prompt: str | list[int], max_tokens: int, stop: Sequence[str], temperature: float,
              seed: int | None) -> dict[str, Any]:
        body: dict[str, Any] = {"prompt": prompt, "max_tokens": max(1, max_tokens), "temperature": temperature,
                                "logprobs": self.top_k, "stop": list(stop) or None}
        if seed is not None:
            body["seed"] = seed
        return body

    def complete(self, url: str, prompt: str | list[int], *, max_tokens: int, stop: Sequence[str], temperature: float,
                 seed: int | None, ignore_eos: bool, sampling: Sampling | None = None) -> Completion:
        body = self._body(prompt, max_tokens, stop, temperature, seed)
        return self._read(self._completion(url, *_sampled(body, sampling, ignore_eos)), stop)

    def complete_n(self, url: str, prompt: str | list[int], n: int, *, max_tokens: int, stop: Sequence[str],
                   temperature: float, seed: int | None, ignore_eos: bool,
                   sampling: Sampling | None = None) -> list[Completion]:
        """n samples from one prompt in one request (`n`), sample k seeded `seed + k` as vLLM seeds them.
        A server that answers with fewer choices (llama-cpp-python's ignores n) gets the rest one request
        each, seeded the same way, then and from then on."""
        kw = dict(max_tokens=max_tokens, stop=stop, temperature=temperature, ignore_eos=ignore_eos,
                  sampling=sampling)
        got: list[Completion] = []
        if url not in self._one_choice:
            body = self._body(prompt, max_tokens, stop, temperature, seed) | {"n": n}
            got = [self._read(ch, stop) for ch in self._choices(url, *_sampled(body, sampling, ignore_eos))[:n]]
            if len(got) < n:
                log.info("%s answers n=%d with %d choice(s): sending samples one request each", url, n, len(got))
                self._one_choice.add(url)
        return got + [self.complete(url, prompt, seed=None if seed is None else seed + k, **kw)
                      for k in range(len(got), n)]

    def _read(self, ch: dict[str, Any], stop: Sequence[str]) -> Completion:
        """A completion choice as a `Completion`."""
        text = ch.get("text") or ""
        lp = ch.get("logprobs") or {}
        tokens = lp.get("tokens") or []
        lps = [x if x is not None else -math.inf for x in (lp.get("token_logprobs") or [])]
        tops = lp.get("top_logprobs") or []
        ents = [entropy_from_top(sorted((t or {}).values(), reverse=True)[: self.top_k]) for t in tops]
        finish, matched = _finish(ch, text, stop)
        if matched is not None and not text.endswith(matched):
            text += matched
        if self.tokenizer is not None:  # the step's ids as the served model's tokenizer encodes it alone
            ids = self.encode(text)
            return Completion(text, len(ids), lps, ents, finish, matched, ids)
        if not tokens:
            n = self.count_tokens(text)
        else:
            n = len(tokens) + (self.count_tokens(matched) if matched and tokens[-1:] != [matched] else 0)
        return Completion(text, n, lps, ents, finish, matched)

    def continuation_logprobs(self, url: str, prompt: str | list[int],
                              continuation: str) -> tuple[list[int], list[float]]:
        if not self._echo_is_right(url):
            raise ServerError(f"{url}: the server returns wrong prompt logprobs (echo; llama-cpp-python's server "
                              f"gives each token the next one's), so {self.name} cannot score text there; use a "
                              "vLLM server or the llamacpp: backend")
        if isinstance(prompt, list):  # token prompts: the continuation is the prompt's last ids
            cont = self.encode(continuation)
            ch = self._completion(url, {"prompt": prompt + cont, "max_tokens": 1, "temperature": 0.0, "echo": True,
                                        "logprobs": 1})
            values = (ch.get("logprobs") or {}).get("token_logprobs") or []
            if len(values) < len(prompt) + len(cont):
                raise self._no_echo(url)
            picked = values[len(prompt): len(prompt) + len(cont)]
            return cont, [v if v is not None else -math.inf for v in picked]
        return self._echoed_logprobs(url, prompt, continuation)

    def _no_echo(self, url: str) -> ServerError:
        return ServerError(f"{url}: the server returns no prompt logprobs (echo with logprobs), so {self.name} "
                           "cannot score text; use a vLLM server or another engine for this judge")

    def _echoed_logprobs(self, url: str, prompt: str, continuation: str) -> tuple[list[int], list[float]]:
        """The logprobs of the tokens of `continuation`, the end of the prompt, as the server echoes them."""
        body = {"prompt": prompt + continuation, "max_tokens": 1, "temperature": 0.0, "echo": True, "logprobs": 1}
        ch = self._completion(url, body)
        lp = ch.get("logprobs") or {}
        tokens, values = lp.get("tokens"), lp.get("token_logprobs")
        n_prompt = (ch.get("usage") or {}).get("prompt_tokens")
        if not tokens or values is None or not n_prompt or len(tokens) < n_prompt:
            raise self._no_echo(url)
        # the continuation is the prompt's last tokens: walk back until their text covers it
        i, covered = n_prompt, 0
        while i > 0 and covered < len(continuation):
            i -= 1
            covered += len(tokens[i])
        picked = range(i, n_prompt)
        return list(picked), [values[j] if values[j] is not None else -math.inf for j in picked]

    def _echo_is_right(self, url: str) -> bool:
        """Whether the server's echoed prompt logprobs are the model's log-probabilities of the prompt's
        tokens, probed once per server: the greedy next token after ECHO_PROBE, echoed back as the end of
        the prompt, must get the logprob it was generated with, within ECHO_TOLERANCE (a token given the
        next token's row is off by many nats). A probe that cannot compare (no text or logprob, a token
        that does not come back alone) finds nothing wrong: the scoring call says what is missing."""
        if url not in self._echo_right:
            ch = self._completion(url, {"prompt": ECHO_PROBE, "max_tokens": 1, "temperature": 0.0, "logprobs": 1})
            token = ch.get("text") or ""
            generated = ((ch.get("logprobs") or {}).get("token_logprobs") or [None])[0]
            right = True
            if token and generated is not None:
                _, echoed = self._echoed_logprobs(url, ECHO_PROBE, token)
                right = len(echoed) != 1 or abs(echoed[0] - generated) <= ECHO_TOLERANCE
            self._echo_right[url] = right
        return self._echo_right[url]

    def candidate_logprobs(self, url: str, prompt: str | list[int], candidates: Sequence[str]) -> dict[str, float]:
        body = {"prompt": prompt, "max_tokens": 1, "temperature": 0.0, "logprobs": self.top_k}
        ch = self._completion(url, body)
        tops = (ch.get("logprobs") or {}).get("top_logprobs") or []
        if not tops or not tops[0]:
            raise ServerError(f"{url}: the server returned no top logprobs, which the judge needs")
        top = tops[0]
        floor = min(top.values())  # candidates outside the top k get at most this
        return {c: top.get(c, floor) for c in candidates}

    def top_token(self, url: str, prompt: str | list[int]) -> tuple[str, float]:
        body = {"prompt": prompt, "max_tokens": 1, "temperature": 0.0, "logprobs": 1}
        tops = (self._completion(url, body).get("logprobs") or {}).get("top_logprobs") or []
        if not tops or not tops[0]:
            raise ServerError(f"{url}: the server returned no top logprobs, which the judge needs")
        token = max(tops[0], key=tops[0].get)
        return token, tops[0][token]


def _finish(choice: dict[str, Any], text: str, stop: Sequence[str]) -> tuple[str, str | None]:
    """(finish reason: "stop" | "length" | "eos", the stop string that matched) of a completion or chat
    choice. A server says which stop string matched in `stop_reason` (vLLM; None: an end of sequence) or
    `matched_stop` (SGLang). One that says neither (llama-cpp-python's) is read thus: an empty text is an
    end of sequence, any other text ended at the first stop string, so an end of sequence after text is
    taken for a step delimiter and the solution ends one (empty) step later."""
    finish = choice.get("finish_reason") or "stop"
    if finish != "stop":
        return "length", None
    reason = choice.get("stop_reason", choice.get("matched_stop"))
    if isinstance(reason, str) and reason in stop:
        return "stop", reason
    if reason is None and ("stop_reason" in choice or "matched_stop" in choice):
        return "eos", None
    matched = stop[0] if stop and text else None  # the server does not say which
    return ("stop" if matched else "eos"), matched


def _legacy(lp: Any) -> Any:
    """A completion's logprobs in the legacy completions form (tokens, token_logprobs, top_logprobs), which
    vLLM and llama-cpp-python's server send; llama.cpp's llama-server sends the chat form (`content`)."""
    if not isinstance(lp, dict) or "tokens" in lp or not isinstance(lp.get("content"), list):
        return lp
    content = lp["content"]
    return {"tokens": [c.get("token", "") for c in content],
            "token_logprobs": [c.get("logprob") for c in content],
            "top_logprobs": [{t["token"]: t["logprob"] for t in c.get("top_logprobs") or []} for c in content]}


def _error_message(e: openai.APIStatusError) -> str:
    """The server's own message from an error answer's body (OpenAI's error.message, FastAPI's detail)."""
    try:
        body = json.loads(e.response.content or b"{}")
        msg = body.get("error", body.get("detail", body))
        if isinstance(msg, dict):
            msg = msg.get("message", msg)
        return str(msg)[:300]
    except (ValueError, OSError):
        return e.response.reason_phrase or "error"


class OpenAISession(PrefixSession):
    """A `PrefixSession` pinned to one server URL; with images, its calls go to /v1/chat/completions."""

    def __init__(self, backend: OpenAIBackend, url: str, prompt_text: str, n_prompt: int,
                 prompt: Prompt | None = None, prompt_ids: list[int] | None = None):
        super().__init__(_Pinned(backend, url, prompt), prompt_text, n_prompt, prompt.images if prompt else (),
                         prompt_ids=prompt_ids)
        self.url = url


def _keyed(call: Callable) -> Callable:
    """A `_Pinned` call whose requests carry the session's key."""
    @functools.wraps(call)
    def keyed(self: _Pinned, *args: Any, **kw: Any) -> Any:
        token = SOLVE_KEY.set(self.key)  # the key `_headers_now` sends
        try:
            return call(self, *args, **kw)
        finally:
            SOLVE_KEY.reset(token)
    return keyed


class _Pinned:
    """The backend's calls with the session's URL, its key (and, with images, its chat prompt) filled in."""

    concurrent = True  # requests may overlap (the server batches them)

    def __init__(self, backend: OpenAIBackend, url: str, prompt: Prompt | None):
        self.b, self.url, self.prompt = backend, url, prompt
        self.key = SOLVE_KEY.get() or uuid.uuid4().hex  # the solve's key, so its sessions share a replica

    def count_tokens(self, text: str) -> int:
        return self.b.count_tokens(text)

    def encode(self, text: str) -> list[int]:
        return self.b.encode(text)

    def decode(self, ids: Sequence[int]) -> str:
        return self.b.decode(ids)

    @_keyed
    def complete(self, prompt: str, images: tuple = (), **kw: Any) -> Completion:
        if self.prompt is not None:
            return self.b.chat_complete(self.url, self.prompt, prompt, **kw)
        return self.b.complete(self.url, prompt, **kw)

    @_keyed
    def complete_n(self, prompt: str, n: int, *, seed: int | None, images: tuple = (), **kw: Any) -> list[Completion]:
        if self.prompt is not None:  # chat requests about images: one sample a request
            return [self.complete(prompt, seed=None if seed is None else seed + k, **kw) for k in range(n)]
        return self.b.complete_n(self.url, prompt, n, seed=seed, **kw)

    @_keyed
    def continuation_logprobs(self, prompt: str, continuation: str,
                              images: tuple = ()) -> tuple[list[int], list[float]]:
        if self.prompt is not None:
            return self.b.chat_continuation_logprobs(self.url, self.prompt, prompt, continuation)
        return self.b.continuation_logprobs(self.url, prompt, continuation)

    @_keyed
    def candidate_logprobs(self, prompt: str, candidates: Sequence[str], images: tuple = ()) -> dict[str, float]:
        if self.prompt is not None:
            return self.b.chat_candidate_logprobs(self.url, self.prompt, prompt, candidates)
        return self.b.candidate_logprobs(self.url, prompt, candidates)

    @_keyed
    def top_token(self, prompt: str, images: tuple = ()) -> tuple[str, float]:
        if self.prompt is not None:
            top = self.b.chat_top_logprobs(self.url, self.prompt, prompt)
            token = max(top, key=top.get)
            return token, top[token]
        return self.b.top_token(self.url, prompt)
