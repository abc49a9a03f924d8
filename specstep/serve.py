"""`specstep serve`: an OpenAI-compatible HTTP server whose one model is a `Solver` (draft + target
+ router). FastAPI on uvicorn; each request solves in its own thread (the solver blocks), so the event
loop keeps serving, streaming and turning requests away meanwhile.

Endpoints: `GET /v1/models`, `GET /v1/models/{id}`, `POST /v1/chat/completions` (JSON, or
Server-Sent Events with `"stream": true`); the OpenAPI docs at `/docs` (and `/openapi.json`).

Request (fields beyond these get 400 naming the field):

- `messages` (required): objects with `role` (system, developer, user, assistant), `content` (a
  string, a list of `{"type": "text", "text": ...}` parts, or null) and optional `name`. The last
  user message is the question; every other message, system prompts included, is ignored (the
  solver writes its own prompt).
- `model`: must be the server's model name when given (else 404 `model_not_found`).
- `max_tokens` / `max_completion_tokens` (one of them): the solution's token budget, at most the
  server's own; a forced final-answer step may add up to 24 tokens after it.
- `temperature` (0-2), `top_p` (0-1, above 0), `top_k` (>= 0), `min_p` (0-1), `seed` (0 to 2**32-1):
  the solve's sampling settings (`top_k` and `min_p` are the extensions vLLM and SGLang take).
- `stream`, `stream_options.include_usage`, `user` (ignored); `n` only 1, `stop` only null or empty.

Response: a `chat.completion` whose content is the solution (the steps joined by a blank line) and
finish_reason "length" when a step or token budget ended the solve, else "stop". `usage` sums the
work of all models: prompt_tokens = every stage's input tokens (draft, judge, router, target),
completion_tokens = every stage's sampled tokens (thrown-away draft steps included), total_tokens =
their sum. The extra field `specstep` holds the per-stage costs (`usage`: draft, judge, router,
target, discarded; each calls, input_tokens, output_tokens, seconds; discarded is part of draft),
answer, answer_rule, stop_reason, forced_answer, steps, steps_by_author, solution_tokens (the
tokens of the returned steps), acceptance (share of draft steps and tokens kept), escalation_rate
(`Solution.escalation_rate`: the share of routed steps escalated, target-only's all; null without
steps), wall_seconds, router and threshold.

Streaming: a first chunk with the role, then one `chat.completion.chunk` per step, sent when the
step is accepted (steps after the first start with the blank line, so the deltas join to the
non-streaming content; each chunk also carries `specstep_step`: index, author, kind, decision,
score, tokens, seconds), then a chunk with finish_reason and `specstep`, then (with
`stream_options.include_usage`) a chunk with empty choices and `usage`, then `data: [DONE]`. An
error after the stream began is sent as a `data: {"error": ...}` event.

Errors are OpenAI-style JSON, `{"error": {"message", "type", "param", "code"}}`: 400 bad request,
401 missing or wrong bearer token (when the server has one; checked before anything else, the docs
excepted), 404 unknown path or model, 405 wrong method, 411 no Content-Length, 413 body over
max_body_bytes (1 MiB), 429 over max_concurrency, 500 a failed solve. The body is parsed and validated
here, not by FastAPI, so that a bad one gets these one-line messages (and a NaN or a body over the
limit is refused before FastAPI would accept or read it); the docs show the same `ChatRequest` model.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any, Literal

import uvicorn
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from reasoning.errors import ConfigError, SpecstepError
from reasoning.types import Problem, Solution, Step

log = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "specstep"
MAX_BODY_BYTES = 1 << 20
MAX_QUESTION_CHARS = 32_000
MAX_SEED = 2**32 - 1
DRAIN_BYTES = 16 << 20  # an unread body up to this size is read before an error reply
# a budget ended the solve (no_answer: it did, and even the forced answer held none)
LENGTH_STOPS = ("max_steps", "token_budget", "no_answer")
_BEARER = HTTPBearer(auto_error=False, description="the server's API key, when it has one")
GRACEFUL_SHUTDOWN_SECONDS = 2  # then unfinished requests are cut off (a solve thread cannot be stopped)
CHAT_PATH = "/v1/chat/completions"


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
    top_p: float | None = Field(None, gt=0.0, le=1.0, allow_inf_nan=False)
    top_k: int | None = Field(None, ge=0)
    min_p: float | None = Field(None, ge=0.0, le=1.0, allow_inf_nan=False)
    stop: str | list[str] | None = None
    user: str | None = None

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


def _validation_error(e: ValidationError | RequestValidationError) -> _HTTPError:
    err = e.errors()[0]
    parts = err["loc"][1:] if isinstance(e, RequestValidationError) else err["loc"]  # FastAPI's: ("path", ...)
    loc = ".".join(str(p) for p in parts)
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
        "escalation_rate": sol.escalation_rate(),
        "wall_seconds": sol.wall_seconds,
        "router": sol.config.router,
        "threshold": sol.config.threshold,
    }


def finish_reason_of(sol: Solution) -> str:
    return "length" if sol.stop_reason in LENGTH_STOPS else "stop"


def _step_info(step: Step) -> dict[str, Any]:
    return {"index": step.index, "author": step.author, "kind": step.kind, "decision": step.decision,
            "score": step.score, "tokens": step.tokens, "seconds": step.costs.seconds}



def request_limits(solver: Any, req: ChatRequest) -> dict[str, Any]:
    """A request's overrides of the solver's limits; its token budget is capped at the solver's."""
    limits: dict[str, Any] = {}
    budget = req.max_tokens if req.max_tokens is not None else req.max_completion_tokens
    if budget is not None:
        cap = getattr(getattr(solver, "limits", None), "max_tokens", None)
        limits["max_tokens"] = min(budget, cap) if cap else budget
    for name in ("temperature", "top_p", "top_k", "min_p", "seed"):
        if getattr(req, name) is not None:
            limits[name] = getattr(req, name)
    return limits


def _json(status: int, body: dict, headers: dict[str, str] | None = None) -> Response:
    # json.dumps: Starlette's JSONResponse refuses NaN and infinities
    return Response(json.dumps(body), status, headers, media_type="application/json")


def _error_response(request: Request, e: _HTTPError) -> Response:
    if e.status < 500:  # a 500 was logged with its traceback
        log.info("%s %s: %d %s", request.method, request.url.path, e.status, e.message)
    return _json(e.status, e.body(), e.headers)


def _solve_failed(e: BaseException) -> _HTTPError:
    """The error a failed solve is reported as (a status, or an error event once the stream began)."""
    if isinstance(e, SpecstepError):  # a limit the solver refused
        return _HTTPError(400, str(e))
    log.error("solve failed", exc_info=e)
    return _HTTPError(500, f"internal error: {type(e).__name__}: {e}", "server_error")


class _ClientGone(Exception):
    """Raised in a streaming solve's step callback once the client has gone: it ends the solve."""


class _StripSlash:
    """ASGI wrapper: a trailing slash is ignored (no redirects)."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and len(scope["path"]) > 1 and scope["path"].endswith("/"):
            scope = {**scope, "path": scope["path"].rstrip("/") or "/"}
        await self.app(scope, receive, send)


class _Service:
    """What the endpoints share: the solver, the API key, the model card, the concurrency slots and the
    request limits."""

    def __init__(self, solver: Any, api_key: str | None, model_name: str, max_concurrency: int | None,
                 max_body_bytes: int, max_question_chars: int):
        if api_key is not None and not api_key.strip():
            raise ConfigError("the API key is empty")
        if not model_name.strip():
            raise ConfigError("the model name is empty")
        if max_concurrency is not None and max_concurrency < 1:
            raise ConfigError(f"max_concurrency must be at least 1, got {max_concurrency}")
        self.solver, self.api_key, self.model_name = solver, api_key, model_name
        self.max_body_bytes, self.max_question_chars = max_body_bytes, max_question_chars
        self.slots = threading.BoundedSemaphore(max_concurrency) if max_concurrency else None
        self.created = int(time.time())

    def authorized(self, creds: HTTPAuthorizationCredentials | None) -> bool:
        return self.api_key is None or (creds is not None and hmac.compare_digest(creds.credentials.encode(),
                                                                                   self.api_key.encode()))

    def unauthorized(self) -> _HTTPError:
        return _HTTPError(401, "missing or wrong API key: send Authorization: Bearer <key>",
                          code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})

    def card(self) -> dict:
        return {"id": self.model_name, "object": "model", "created": self.created, "owned_by": "specstep"}

    def no_such_model(self, name: str) -> _HTTPError:
        return _HTTPError(404, f"model {name!r} does not exist; this server has {self.model_name!r}",
                          param="model", code="model_not_found")

    async def chat(self, request: Request) -> Response:
        req, question = self.parse(await self.read_body(request))
        limits = request_limits(self.solver, req)
        if self.slots is not None and not self.slots.acquire(blocking=False):
            raise _HTTPError(429, "the server is busy: too many requests at once; retry later", "rate_limit_error",
                             code="rate_limit_exceeded", headers={"Retry-After": "1"})
        if req.stream:
            return await self.stream(req, question, limits)
        done: asyncio.Future = asyncio.get_running_loop().create_future()
        self.start_solve(question, limits, None, lambda ok, value: _settle(done, ok, value))
        try:
            sol = await done
        except Exception as e:
            raise _solve_failed(e) from None
        return _json(200, {
            "id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
            "model": self.model_name,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": sol.text},
                         "logprobs": None, "finish_reason": finish_reason_of(sol)}],
            "usage": usage_of(sol), "specstep": specstep_of(sol),
        })

    # the request

    async def read_body(self, request: Request) -> bytes:
        if request.headers.get("Transfer-Encoding"):
            raise _HTTPError(411, "send the body with Content-Length (chunked bodies are not supported)")
        length = request.headers.get("Content-Length")
        if length is None:
            raise _HTTPError(411, "Content-Length is required")
        try:
            n = int(length)
        except ValueError:
            n = -1
        if n < 0:
            raise _HTTPError(400, f"bad Content-Length {length!r}")
        if n > self.max_body_bytes:
            err = _HTTPError(413, f"the request body is too large ({n} bytes; the limit is {self.max_body_bytes})",
                             code="request_too_large")
            if n > DRAIN_BYTES:
                err.headers["Connection"] = "close"
            else:  # read it, so that a client still sending it gets the answer
                async for _ in request.stream():
                    pass
            raise err
        body = await request.body()
        if len(body) != n:
            raise _HTTPError(400, "the request body is shorter than its Content-Length")
        return body

    def parse(self, body: bytes) -> tuple[ChatRequest, str]:
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
        if req.model is not None and req.model != self.model_name:
            raise self.no_such_model(req.model)
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
        if len(question) > self.max_question_chars:
            raise _HTTPError(400, f"the question is too long ({len(question)} characters; the limit is "
                             f"{self.max_question_chars})", param="messages", code="context_length_exceeded")
        return req, question

    # the solve: in its own thread, which frees the slot when it ends

    def start_solve(self, question: str, limits: dict[str, Any], on_step: Callable[[Step], None] | None,
                    finish: Callable[[bool, Any], None]) -> None:
        def run() -> None:
            try:
                sol = self.solver.solve(Problem(question=question), on_step=on_step, **limits)
            except BaseException as e:  # noqa: BLE001 - handed to the request
                outcome: tuple[bool, Any] = (False, e)
            else:
                log.info("solved: %d steps, stop %s, %.2fs", len(sol.steps), sol.stop_reason, sol.wall_seconds)
                outcome = (True, sol)
            finally:
                if self.slots is not None:
                    self.slots.release()
            finish(*outcome)

        threading.Thread(target=run, name="specstep-solve", daemon=True).start()

    async def stream(self, req: ChatRequest, question: str, limits: dict[str, Any]) -> Response:
        cid, created_at = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        include_usage = req.stream_options is not None and req.stream_options.include_usage
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        gone = threading.Event()

        def post(kind: str, value: Any) -> None:  # from the solve thread
            try:
                loop.call_soon_threadsafe(events.put_nowait, (kind, value))
            except RuntimeError:  # the server has stopped
                gone.set()

        def on_step(step: Step) -> None:
            if gone.is_set():
                raise _ClientGone
            post("step", step)

        self.start_solve(question, limits, on_step, lambda ok, value: post("done" if ok else "error", value))
        try:  # the headers wait for the first step, so that an earlier error gets a status
            first = await events.get()
        except BaseException:  # cancelled (the server stops): the solve ends at its next step
            gone.set()
            raise
        if first[0] == "error":
            raise _solve_failed(first[1])

        def event(obj: dict | str) -> bytes:
            return f"data: {obj if isinstance(obj, str) else json.dumps(obj)}\n\n".encode()

        def chunk(choices: list, **extra: Any) -> bytes:
            body = {"id": cid, "object": "chat.completion.chunk", "created": created_at, "model": self.model_name,
                    "choices": choices, **extra}
            if include_usage:
                body.setdefault("usage", None)
            return event(body)

        async def body() -> AsyncIterator[bytes]:
            sent, (kind, value) = 0, first
            try:
                yield chunk([{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                              "finish_reason": None}])
                while kind == "step":
                    text = ("\n\n" if sent else "") + value.text
                    sent += 1
                    yield chunk([{"index": 0, "delta": {"content": text}, "logprobs": None, "finish_reason": None}],
                                specstep_step=_step_info(value))
                    kind, value = await events.get()
                if kind == "error":  # the stream began: an error event ends it
                    yield event(_solve_failed(value).body())
                    return
                yield chunk([{"index": 0, "delta": {}, "logprobs": None, "finish_reason": finish_reason_of(value)}],
                            specstep=specstep_of(value))
                if include_usage:
                    yield chunk([], usage=usage_of(value))
                yield event("[DONE]")
            finally:
                if kind == "step":
                    log.info("client went away: the solve stops at its next step")
                gone.set()

        return StreamingResponse(body(), headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})


def create_app(solver: Any, *, api_key: str | None = None, model_name: str = DEFAULT_MODEL_NAME,
               max_concurrency: int | None = None, max_body_bytes: int = MAX_BODY_BYTES,
               max_question_chars: int = MAX_QUESTION_CHARS) -> FastAPI:
    """The FastAPI application serving `solver` (run it with any ASGI server; `make_server` uses uvicorn)."""
    from reasoning import __version__

    svc = _Service(solver, api_key, model_name, max_concurrency, max_body_bytes, max_question_chars)

    async def require_key(creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)]) -> None:
        if not svc.authorized(creds):
            raise svc.unauthorized()

    app = FastAPI(title="specstep", version=__version__, dependencies=[Depends(require_key)],
                  redirect_slashes=False,
                  description="An OpenAI-compatible chat completions API whose one model is a specstep solver.")
    app.add_middleware(_StripSlash)
    _add_error_handlers(app, svc)

    @app.get("/v1/models", summary="The server's one model")
    async def models() -> Response:
        return _json(200, {"object": "list", "data": [svc.card()]})

    @app.get("/v1/models/{model_id:path}", summary="One model by id")
    async def model(model_id: str) -> Response:
        if model_id != svc.model_name:
            raise svc.no_such_model(model_id)
        return _json(200, svc.card())

    @app.post(CHAT_PATH, summary="Solve the last user message", openapi_extra={"requestBody": {
        "required": True, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ChatRequest"}}}},
        "responses": {"200": {"description": "a chat.completion, or with stream: true Server-Sent Events of "
                                             "chat.completion.chunk objects ending with data: [DONE]"}}})
    async def chat_completions(request: Request) -> Response:
        return await svc.chat(request)

    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _add_error_handlers(app: FastAPI, svc: _Service) -> None:
    """Errors as OpenAI-style JSON with the server's statuses and one-line messages."""

    @app.exception_handler(_HTTPError)
    async def _on_error(request: Request, e: _HTTPError) -> Response:
        return _error_response(request, e)

    @app.exception_handler(StarletteHTTPException)
    async def _on_routing(request: Request, e: StarletteHTTPException) -> Response:
        path = request.url.path
        if not svc.authorized(await _BEARER(request)):  # the key is checked before the path
            return _error_response(request, svc.unauthorized())
        if e.status_code == 404:
            err = _HTTPError(404, f"unknown path {path!r}: this server has /v1/models and {CHAT_PATH}",
                             code="not_found")
        elif e.status_code == 405:
            allowed = "POST" if path == CHAT_PATH else "GET"
            err = _HTTPError(405, f"method {request.method} is not allowed on {path}; use {allowed}",
                             code="method_not_allowed", headers={"Allow": allowed})
        else:
            err = _HTTPError(e.status_code, str(e.detail), headers=dict(e.headers or {}))
        return _error_response(request, err)

    @app.exception_handler(RequestValidationError)
    async def _on_invalid(request: Request, e: RequestValidationError) -> Response:
        return _error_response(request, _validation_error(e))  # 400, not FastAPI's 422

    @app.exception_handler(Exception)
    async def _on_crash(request: Request, e: Exception) -> Response:
        log.error("request %s %s failed", request.method, request.url.path, exc_info=e)
        return _json(500, _HTTPError(500, f"internal error: {type(e).__name__}: {e}", "server_error").body())


def _openapi(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI schema with the request model, which the endpoint validates itself."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, description=app.description,
                             routes=app.routes)
        model_schema = ChatRequest.model_json_schema(ref_template="#/components/schemas/{model}")
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.update(model_schema.pop("$defs", {}))
        components["ChatRequest"] = model_schema
        app.openapi_schema = schema
    return app.openapi_schema


def _settle(fut: asyncio.Future, ok: bool, value: Any) -> None:
    """Settle `fut` from another thread (nothing when its loop has stopped)."""
    def set_() -> None:
        if fut.done():
            return
        if ok:
            fut.set_result(value)
        else:
            fut.set_exception(value)

    try:
        fut.get_loop().call_soon_threadsafe(set_)
    except RuntimeError:
        pass


class SpecstepServer:
    """`create_app` on uvicorn, bound at construction; `url` is its base address (without /v1).
    `serve_forever()` runs it in the calling thread until `shutdown()` (from another thread) or, in the
    main thread, Ctrl-C (after which KeyboardInterrupt is raised); `server_close()` frees the port."""

    def __init__(self, address: tuple[str, int], solver: Any, **options: Any):
        self.app = create_app(solver, **options)
        self.socket = socket.socket(socket.AF_INET6 if ":" in address[0] else socket.AF_INET, socket.SOCK_STREAM)
        try:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.socket.bind(address)
            self.socket.listen(128)
        except OSError:
            self.socket.close()
            raise
        self.server_address = self.socket.getsockname()
        config = uvicorn.Config(self.app, log_config=None, lifespan="off", timeout_keep_alive=60,
                                timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS)
        self._uvicorn = uvicorn.Server(config)
        self._running = threading.Event()
        self._stopped = threading.Event()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def serve_forever(self) -> None:
        self._running.set()
        try:
            self._uvicorn.run(sockets=[self.socket])
        finally:
            self._stopped.set()

    def shutdown(self) -> None:
        """Stop serving and wait until `serve_forever` has returned."""
        self._uvicorn.should_exit = True
        if self._running.is_set():
            self._stopped.wait()

    def server_close(self) -> None:
        self.socket.close()


def make_server(solver: Any, host: str = "127.0.0.1", port: int = 0, api_key: str | None = None,
                model_name: str = DEFAULT_MODEL_NAME, **options: Any) -> SpecstepServer:
    """Bind (port 0 picks a free port) without serving; run `serve_forever()` in any thread, and
    `shutdown()` and `server_close()` to stop. `options`: max_concurrency (beyond it requests get
    429), max_body_bytes, max_question_chars."""
    return SpecstepServer((host, port), solver, api_key=api_key, model_name=model_name, **options)


__all__ = ["ChatRequest", "SpecstepServer", "create_app", "make_server", "specstep_of", "usage_of"]
