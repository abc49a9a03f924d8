"""Small file helpers whose errors are one line naming the file (ConfigError)."""

from __future__ import annotations

from pathlib import Path

from reasoning.errors import ConfigError


def read_text(path: Path, what: str) -> str:
    """The file's UTF-8 text; `what` names it in errors ("router file", "traces file")."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{what} {path} is not UTF-8 text") from None
    except OSError as e:
        raise ConfigError(f"{what} {path} cannot be read: {e.strerror}") from None
