"""`specstep serve`: an OpenAI-compatible HTTP server whose one model is a `Solver` (draft + target
+ router). Standard library HTTP (ThreadingHTTPServer); each request solves in its own thread.

Endpoints: `GET /v1/models`, `GET /v1/models/{id}`, `POST /v1/chat/completions` (JSON, or
Server-Sent Events with `"stream": true`).

Request (fields beyond these get 400 naming the field):

- `messages` (required): objects with `role` (system, developer, user, assistant), `content` (a
  string, a list of `{"type": "text", "text": ...}` parts, or null) and optional `name`. The last
  user message is the question; every other message, system prompts included, is ignored (the
  solver writes its own prompt).
- `model`: must be the server's model name when given (else 404 `model_not_found`).
- `max_tokens` / `max_completion_tokens` (one of them): the solution's token budget, at most the
  server's own; a forced final-answer step may add up to 24 tokens after it.
- `temperature` (0-2), `seed` (0 to 2**32-1): the solve's sampling settings.
- `stream`, `stream_options.include_usage`, `user` (ignored); `n` only 1, `top_p` only 1, `stop`
  only null or empty.

Response: a `chat.completion` whose content is the solution (the steps joined by a blank line) and
finish_reason "length" when a step or token budget ended the solve, else "stop". `usage` sums the
work of all models: prompt_tokens = every stage's input tokens (draft, judge, router, target),
completion_tokens = every stage's sampled tokens (thrown-away draft steps included), total_tokens =
their sum. The extra field `specstep` holds the per-stage costs (`usage`: draft, judge, router,
target, discarded; each calls, input_tokens, output_tokens, seconds; discarded is part of draft),
answer, answer_rule, stop_reason, forced_answer, steps, steps_by_author, solution_tokens (the
tokens of the returned steps), acceptance (share of draft steps and tokens kept), escalation_rate
(share of draft steps escalated; null when no draft ran), wall_seconds, router and threshold.

Streaming: a first chunk with the role, then one `chat.completion.chunk` per step, sent when the
step is accepted (steps after the first start with the blank line, so the deltas join to the
non-streaming content; each chunk also carries `specstep_step`: index, author, kind, decision,
score, tokens, seconds), then a chunk with finish_reason and `specstep`, then (with
`stream_options.include_usage`) a chunk with empty choices and `usage`, then `data: [DONE]`. An
error after the stream began is sent as a `data: {"error": ...}` event.

Errors are OpenAI-style JSON, `{"error": {"message", "type", "param", "code"}}`: 400 bad request,
401 missing or wrong bearer token (when the server has one), 404 unknown path or model, 405 wrong
method, 411 no Content-Length, 413 body over max_body_bytes (1 MiB), 429 over max_concurrency, 500 a
failed solve.
"""

from __future__ import annotations

import hmac
import json
import logging
import socket
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from reasoning.errors import ConfigError, SpecstepError
from reasoning.types import Problem, Solution, Step

log = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "specstep"
MAX_BODY_BYTES = 1 << 20
MAX_QUESTION_CHARS = 32_000
MAX_SEED = 2**32 - 1
DRAIN_BYTES = 16 << 20  # an unread body up to this size is read before an error reply
LENGTH_STOPS = ("max_steps", "token_budget")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class StreamOptions(_Strict):
    include_usage: bool = False


class Message(_Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | None = None
    name: str | None = None

    @field_validator("content", mode="before")
    @classmethod
    def _text_parts(cls, v: Any) -> Any:
        """A list of text parts becomes their texts joined by newlines."""
        if not isinstance(v, list):
            return v
        texts = []
        for part in v:
            if not isinstance(part, dict) or part.get("type") != "text":
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise ValueError(f"only text content parts are supported, got {kind!r}")
            if set(part) != {"type", "text"} or not isinstance(part["text"], str):
                raise ValueError("a text part is {\"type\": \"text\", \"text\": STRING}")
            texts.append(part["text"])
        return "\n".join(texts)


class ChatRequest(_Strict):
    """The accepted subset of OpenAI's chat completion request."""

    messages: list[Message] = Field(min_length=1)
    model: str | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0, allow_inf_nan=False)
    seed: int | None = Field(None, ge=0, le=MAX_SEED)
    n: Literal[1] | None = None
    top_p: float | None = None
    stop: str | list[str] | None = None
    user: str | None = None

    @field_validator("top_p")
    @classmethod
    def _top_p(cls, v: float | None) -> float | None:
        if v is not None and v != 1:
            raise ValueError("only top_p 1 is supported")
        return v

    @field_validator("stop")
    @classmethod
    def _stop(cls, v: str | list[str] | None) -> None:
        if v:
            raise ValueError("stop sequences are not supported (steps end at blank lines, solutions at an answer)")
        return None


class _HTTPError(Exception):
    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", *,
                 param: str | None = None, code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def _validation_error(e: ValidationError) -> _HTTPError:
    err = e.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    if err["type"] == "extra_forbidden":
        msg = f"unknown field '{loc}'"
    elif err["type"] == "missing":
        msg = f"missing field '{loc}'"
    else:
        text = err["msg"].removeprefix("Value error, ")
        msg = f"bad value for '{loc}': {text}"
    return _HTTPError(400, msg, param=loc or None, code="invalid_value")


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


def usage_of(sol: Solution) -> dict[str, int]:
    """OpenAI `usage`: the tokens all stages ran (input) and sampled (output)."""
    c = sol.costs
    stages = (c.draft, c.judge, c.router, c.target)
    prompt = sum(s.input_tokens for s in stages)
    completion = sum(s.output_tokens for s in stages)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def specstep_of(sol: Solution) -> dict[str, Any]:
    """The `specstep` field: per-stage costs and the solve's outcome."""
    proposed = [s for s in sol.steps if s.draft_text is not None]
    escalated = sum(1 for s in proposed if s.decision == "escalate")
    return {
        "usage": sol.costs.model_dump(),
        "answer": sol.answer,
        "answer_rule": sol.answer_rule,
        "stop_reason": sol.stop_reason,
        "forced_answer": sol.forced_answer,
        "steps": len(sol.steps),
        "steps_by_author": {a: sum(1 for s in sol.steps if s.author == a) for a in ("draft", "target")},
        "solution_tokens": sum(s.tokens for s in sol.steps),
        "acceptance": sol.acceptance(),
        "escalation_rate": escalated / len(proposed) if proposed else None,
        "wall_seconds": sol.wall_seconds,
        "router": sol.config.router,
        "threshold": sol.config.threshold,
    }


def finish_reason_of(sol: Solution) -> str:
    return "length" if sol.stop_reason in LENGTH_STOPS else "stop"


def _step_info(step: Step) -> dict[str, Any]:
    return {"index": step.index, "author": step.author, "kind": step.kind, "decision": step.decision,
            "score": step.score, "tokens": step.tokens, "seconds": step.costs.seconds}


class SpecstepServer(ThreadingHTTPServer):
    """The HTTP server; `url` is its base address (without /v1)."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], solver: Any, *, api_key: str | None = None,
                 model_name: str = DEFAULT_MODEL_NAME, max_concurrency: int | None = None,
                 max_body_bytes: int = MAX_BODY_BYTES, max_question_chars: int = MAX_QUESTION_CHARS):
        if api_key is not None and not api_key.strip():
            raise ConfigError("the API key is empty")
        if not model_name.strip():
            raise ConfigError("the model name is empty")
        if max_concurrency is not None and max_concurrency < 1:
            raise ConfigError(f"max_concurrency must be at least 1, got {max_concurrency}")
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.solver = solver
        self.api_key = api_key
        self.model_name = model_name
        self.max_body_bytes = max_body_bytes
        self.max_question_chars = max_question_chars
        self.slots = threading.BoundedSemaphore(max_concurrency) if max_concurrency else None
        self.created = int(time.time())
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            log.info("client %s went away or timed out", client_address[0])
        else:
            log.exception("error while handling a request from %s", client_address[0])

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def make_server(solver: Any, host: str = "127.0.0.1", port: int = 0, api_key: str | None = None,
                model_name: str = DEFAULT_MODEL_NAME, **options: Any) -> SpecstepServer:
    """Bind (port 0 picks a free port) without serving; run `serve_forever()` in any thread, and
    `shutdown()` and `server_close()` to stop. `options`: max_concurrency (beyond it requests get
    429), max_body_bytes, max_question_chars."""
    return SpecstepServer((host, port), solver, api_key=api_key, model_name=model_name, **options)


def serve(solver: Any, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None,
          model_name: str = DEFAULT_MODEL_NAME, **options: Any) -> None:
    """Serve until interrupted."""
    server = make_server(solver, host, port, api_key, model_name, **options)
    log.info("serving %s at %s/v1", model_name, server.url)
    try:
        server.serve_forever()
    finally:
        server.server_close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "specstep"
    timeout = 60  # seconds a connection may sit idle or take to send its request
    server: SpecstepServer

    def log_message(self, format: str, *args: Any) -> None:
        log.info("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        self._streaming = False
        self._body_read = False
        path = urlsplit(self.path).path.rstrip("/") or "/"
        try:
            self._check_auth()
            if path == "/v1/models":
                allowed, run = "GET", self._models
            elif path.startswith("/v1/models/"):
                allowed, run = "GET", lambda: self._model(unquote(path[len("/v1/models/"):]))
            elif path == "/v1/chat/completions":
                allowed, run = "POST", self._chat
            else:
                raise _HTTPError(404, f"unknown path {path!r}: this server has /v1/models and "
                                 "/v1/chat/completions", code="not_found")
            if method != allowed:
                raise _HTTPError(405, f"method {method} is not allowed on {path}; use {allowed}",
                                 code="method_not_allowed", headers={"Allow": allowed})
            run()
        except _HTTPError as e:
            self._send_error(e)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            log.info("client %s went away or timed out", self.address_string())
            self.close_connection = True
        except Exception as e:  # a failed solve: report it, keep serving
            log.exception("request %s %s failed", method, path)
            self._send_error(_HTTPError(500, f"internal error: {type(e).__name__}: {e}", "server_error"))

    # responses

    def _send_json(self, status: int, body: dict, headers: dict[str, str] | None = None,
                   close: bool = False) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(data)

    def _send_error(self, e: _HTTPError) -> None:
        if e.status < 500:  # a 500 was logged with its traceback
            log.info("%s %s: %d %s", self.command, self.path, e.status, e.message)
        try:
            if self._streaming:  # headers are out: an error event ends the stream
                self.close_connection = True
                self._event(e.body())
                self._chunk(b"")
            else:  # a body left unread would be read as the next request: drain it, or close
                self._send_json(e.status, e.body(), e.headers, close=not self._drain())
        except OSError:
            log.info("client %s went away", self.address_string())
            self.close_connection = True

    def _drain(self) -> bool:
        """Read and drop an unread request body; False when it cannot be (then close)."""
        if self._body_read:
            return True
        if self.headers.get("Transfer-Encoding"):
            return False
        try:
            left = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            return False
        if left < 0 or left > DRAIN_BYTES:
            return False
        while left > 0:
            data = self.rfile.read(min(left, 1 << 16))
            if not data:
                return False
            left -= len(data)
        self._body_read = True
        return True

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _event(self, obj: dict | str) -> None:
        payload = obj if isinstance(obj, str) else json.dumps(obj)
        self._chunk(f"data: {payload}\n\n".encode())

    # endpoints

    def _check_auth(self) -> None:
        key = self.server.api_key
        if key is None:
            return
        scheme, _, token = self.headers.get("Authorization", "").partition(" ")
        if not (scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), key.encode())):
            raise _HTTPError(401, "missing or wrong API key: send Authorization: Bearer <key>",
                             code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})

    def _model_card(self) -> dict:
        return {"id": self.server.model_name, "object": "model", "created": self.server.created,
                "owned_by": "specstep"}

    def _models(self) -> None:
        self._send_json(200, {"object": "list", "data": [self._model_card()]})

    def _model(self, name: str) -> None:
        if name != self.server.model_name:
            raise _HTTPError(404, f"model {name!r} does not exist; this server has {self.server.model_name!r}",
                             param="model", code="model_not_found")
        self._send_json(200, self._model_card())

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding"):
            raise _HTTPError(411, "send the body with Content-Length (chunked bodies are not supported)")
        length = self.headers.get("Content-Length")
        if length is None:
            raise _HTTPError(411, "Content-Length is required")
        try:
            n = int(length)
        except ValueError:
            n = -1
        if n < 0:
            raise _HTTPError(400, f"bad Content-Length {length!r}")
        if n > self.server.max_body_bytes:
            raise _HTTPError(413, f"the request body is too large ({n} bytes; the limit is "
                             f"{self.server.max_body_bytes})", code="request_too_large")
        body = self.rfile.read(n)
        self._body_read = len(body) == n
        if len(body) != n:
            raise _HTTPError(400, "the request body is shorter than its Content-Length")
        return body

    def _parse(self, body: bytes) -> tuple[ChatRequest, str]:
        try:
            data = json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
        except UnicodeDecodeError:
            raise _HTTPError(400, "the request body is not UTF-8", code="invalid_json") from None
        except json.JSONDecodeError as e:
            raise _HTTPError(400, f"the request body is not valid JSON: {e.msg} at line {e.lineno} "
                             f"column {e.colno}", code="invalid_json") from None
        except ValueError as e:
            raise _HTTPError(400, f"the request body is not valid JSON: {e}", code="invalid_json") from None
        if not isinstance(data, dict):
            raise _HTTPError(400, "the request body must be a JSON object", code="invalid_json")
        try:
            req = ChatRequest.model_validate(data)
        except ValidationError as e:
            raise _validation_error(e) from None
        if req.model is not None and req.model != self.server.model_name:
            raise _HTTPError(404, f"model {req.model!r} does not exist; this server has {self.server.model_name!r}",
                             param="model", code="model_not_found")
        if req.max_tokens is not None and req.max_completion_tokens is not None:
            raise _HTTPError(400, "give max_tokens or max_completion_tokens, not both", param="max_tokens")
        if req.stream_options is not None and not req.stream:
            raise _HTTPError(400, "stream_options is only allowed with stream: true", param="stream_options")
        users = [m for m in req.messages if m.role == "user"]
        if not users:
            raise _HTTPError(400, "no user message: the last user message is the question", param="messages")
        question = users[-1].content or ""
        if not question.strip():
            raise _HTTPError(400, "the last user message is empty", param="messages")
        if len(question) > self.server.max_question_chars:
            raise _HTTPError(400, f"the question is too long ({len(question)} characters; the limit is "
                             f"{self.server.max_question_chars})", param="messages", code="context_length_exceeded")
        return req, question

    def _limits(self, req: ChatRequest) -> dict[str, Any]:
        limits: dict[str, Any] = {}
        budget = req.max_tokens if req.max_tokens is not None else req.max_completion_tokens
        server_limits = getattr(self.server.solver, "limits", None)
        if budget is not None:
            cap = getattr(server_limits, "max_tokens", None)
            limits["max_tokens"] = min(budget, cap) if cap else budget
        if req.temperature is not None:
            limits["temperature"] = req.temperature
        if req.seed is not None:
            limits["seed"] = req.seed
        return limits

    def _chat(self) -> None:
        req, question = self._parse(self._read_body())
        limits = self._limits(req)
        slots = self.server.slots
        if slots is not None and not slots.acquire(blocking=False):
            raise _HTTPError(429, "the server is busy: too many requests at once; retry later", "rate_limit_error",
                             code="rate_limit_exceeded", headers={"Retry-After": "1"})
        try:
            if req.stream:
                self._stream(req, question, limits)
            else:
                sol = self._solve(question, None, limits)
                self._send_json(200, {
                    "id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
                    "model": self.server.model_name,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": sol.text},
                                 "logprobs": None, "finish_reason": finish_reason_of(sol)}],
                    "usage": usage_of(sol), "specstep": specstep_of(sol),
                })
        finally:
            if slots is not None:
                slots.release()

    def _solve(self, question: str, on_step: Any, limits: dict[str, Any]) -> Solution:
        try:
            sol = self.server.solver.solve(Problem(question=question), on_step=on_step, **limits)
        except SpecstepError as e:  # a limit the solver refused
            raise _HTTPError(400, str(e)) from None
        log.info("solved: %d steps, stop %s, %.2fs", len(sol.steps), sol.stop_reason, sol.wall_seconds)
        return sol

    def _stream(self, req: ChatRequest, question: str, limits: dict[str, Any]) -> None:
        cid, created, model = f"chatcmpl-{uuid.uuid4().hex}", int(time.time()), self.server.model_name
        include_usage = req.stream_options is not None and req.stream_options.include_usage
        sent = 0

        def chunk(choices: list, **extra: Any) -> None:
            body = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                    "choices": choices, **extra}
            if include_usage:
                body.setdefault("usage", None)
            self._event(body)

        def start() -> None:  # headers go out with the first step, so earlier errors get a status
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self._streaming = True
            chunk([{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                    "finish_reason": None}])

        def on_step(step: Step) -> None:
            nonlocal sent
            if not self._streaming:
                start()
            text = ("\n\n" if sent else "") + step.text
            sent += 1
            chunk([{"index": 0, "delta": {"content": text}, "logprobs": None, "finish_reason": None}],
                  specstep_step=_step_info(step))

        sol = self._solve(question, on_step, limits)
        if not self._streaming:
            start()
        chunk([{"index": 0, "delta": {}, "logprobs": None, "finish_reason": finish_reason_of(sol)}],
              specstep=specstep_of(sol))
        if include_usage:
            chunk([], usage=usage_of(sol))
        self._event("[DONE]")
        self._chunk(b"")


__all__ = ["ChatRequest", "SpecstepServer", "make_server", "serve", "specstep_of", "usage_of"]
