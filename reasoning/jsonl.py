"""Durable JSONL files and run folders: the one place for crash safety.

- `append` / `Appender`: one record a line (a pydantic model as `model_dump_json()`, anything else as
  `json.dumps`), several records in one write call, then flush and fsync.
- `read`: every record of a file. A last line without its newline is a write cut short by a crash:
  if it parses it is complete and gets its newline, else it is cut off (with a warning). Complete
  records are never lost and never duplicated; any other bad line is a one-line `ConfigError`.
- `replace`: atomically make a file hold new bytes (temp file in the same folder, fsync, `os.replace`).
- `check_identity` / `write_identity`: a run folder's identity file (``{"identity": ...}``), which a
  resumed run must match.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from reasoning.errors import ConfigError

log = logging.getLogger(__name__)

T = TypeVar("T")


def line(record: Any) -> bytes:
    """One record as a JSONL line, newline included."""
    text = record.model_dump_json() if isinstance(record, BaseModel) else json.dumps(record)
    return (text + "\n").encode()


def _records(records: Any) -> list[Any]:
    return list(records) if isinstance(records, (list, tuple)) else [records]


def append(path: Path, records: Any) -> None:
    """Append a record, or a list of records in one write call; then flush and fsync."""
    data = b"".join(line(r) for r in _records(records))
    with Path(path).open("ab") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


class Appender:
    """An open JSONL file: `write` appends a record (or a list in one write call), flushed and fsynced."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._f = self.path.open("ab")

    def write(self, records: Any) -> None:
        self._f.write(b"".join(line(r) for r in _records(records)))
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> Appender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def fsync_dir(path: Path) -> None:
    """Make a rename or a new file in folder `path` durable (where the OS allows it)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def replace(path: Path, data: bytes) -> None:
    """Atomically make `path` hold `data`: a temp file in the same folder, fsync, `os.replace`."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes the file private; these files are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


@dataclass(frozen=True)
class Line(Generic[T]):
    number: int  # 1-based line number in the file
    raw: bytes  # the line's bytes, without its newline
    value: T


@dataclass
class Read(Generic[T]):
    """What `read` found: the parsed lines and the bytes of a torn last line it cut off (0: none)."""

    lines: list[Line[T]] = field(default_factory=list)
    torn: int = 0

    @property
    def values(self) -> list[T]:
        return [x.value for x in self.lines]


def _sync(f: Any) -> None:
    f.flush()
    os.fsync(f.fileno())


def read(path: Path, parse: Callable[[bytes], T], bad_line: str | Callable[[Exception], str],
         *, repair: bool = True, what: str = "file") -> Read[T]:
    """Every non-blank line of `path` parsed by `parse` (which raises ValueError on a bad line;
    pydantic's ValidationError is one). A missing file has no lines.

    A bad complete line raises ConfigError ``"{path}:{n}: {bad_line}"`` (`bad_line` may be a function
    of the error). With `repair` the last line, when it lacks its newline, is a write cut short: it
    is kept and given its newline if it parses, else cut off the file. Without `repair` the file is
    never changed and a bad last line is an error like any other. Nothing is changed before every
    complete line has parsed."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return Read()
    except OSError as e:
        raise ConfigError(f"{what} {path} cannot be read: {e.strerror}") from None
    cut = raw.rfind(b"\n") + 1
    parts = raw[:cut].split(b"\n")[:-1]
    tail = raw[cut:]
    if tail and not repair:
        parts.append(tail)
        tail = b""
    out: Read[T] = Read()
    for n, text in enumerate(parts, start=1):
        if not text.strip():
            continue
        try:
            value = parse(text)
        except ValueError as e:
            msg = bad_line if isinstance(bad_line, str) else bad_line(e)
            raise ConfigError(f"{path}:{n}: {msg}") from None
        out.lines.append(Line(n, text, value))
    if not tail:
        return out
    if tail.strip():
        try:
            value = parse(tail)
        except ValueError:
            pass
        else:  # only its newline is missing: give it one, so the next append starts a new line
            with path.open("ab") as f:
                f.write(b"\n")
                _sync(f)
            out.lines.append(Line(len(parts) + 1, tail, value))
            return out
    with path.open("r+b") as f:
        f.truncate(cut)
        _sync(f)
    out.torn = len(tail)
    log.warning("%s: cut off a torn last line (%d bytes of a write cut short by a crash)", path, len(tail))
    return out


def read_values(path: Path, parse: Callable[[bytes], T], bad_line: str | Callable[[Exception], str],
                **kw: Any) -> list[T]:
    """`read(...).values`: the parsed records only."""
    return read(path, parse, bad_line, **kw).values


# --------------------------------------------------------------------------- run folders


def _normal(identity: Mapping[str, Any]) -> Any:
    return json.loads(json.dumps(identity))  # as it reads back from the file (tuples as lists...)


def check_identity(path: Path, identity: Mapping[str, Any], *, differs: str, unreadable: str) -> bool:
    """Whether the identity file `path` exists; ConfigError when it names another run.

    `differs` is the error for a folder of another run, `unreadable` for a file that is not JSON."""
    path = Path(path)
    if not path.exists():
        return False
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # UnicodeDecodeError is a ValueError
        raise ConfigError(unreadable) from None
    if not isinstance(old, dict) or old.get("identity") != _normal(identity):
        raise ConfigError(differs)
    return True


def write_identity(path: Path, identity: Mapping[str, Any], **extra: Any) -> None:
    """Write the identity file atomically: ``{"identity": identity, **extra}``, indented JSON."""
    replace(path, (json.dumps({"identity": dict(identity), **extra}, indent=2) + "\n").encode())


__all__ = [
    "Appender", "Line", "Read", "append", "check_identity", "fsync_dir", "line", "read", "read_values", "replace",
    "write_identity",
]
