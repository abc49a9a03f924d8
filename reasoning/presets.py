"""Presets and config files: solve options (the fields of `Limits`) written down once.

A preset is a TOML file shipped in reasoning/data/presets/ for a family of models (`preset_names()`); a
config file is a TOML file of the user's, with the same keys, and `preset = "NAME"` to start from a
preset. The options of a solve are layered, each over the one before: the command's defaults, the
preset, the config file, and the options given on the command line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import tomllib

from reasoning.errors import ConfigError
from reasoning.options import Limits, make_limits

PRESETS = Path(__file__).parent / "data" / "presets"
_META = {"description", "preset"}  # keys of a file that are not solve options


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESETS.glob("*.toml"))


def _read(path: Path, what: str) -> dict[str, Any]:
    try:
        values = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"{what}: {e.strerror or e}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{what} is not valid TOML ({e})") from None
    unknown = sorted(set(values) - set(Limits.model_fields) - _META)
    if unknown:
        raise ConfigError(f"{what}: unknown option {unknown[0]!r} (options: {', '.join(sorted(Limits.model_fields))})")
    try:
        make_limits(**{k: v for k, v in values.items() if k not in _META})
    except ConfigError as e:
        raise ConfigError(f"{what}: {e}") from None
    return values


def read_preset(name: str) -> dict[str, Any]:
    """A shipped preset's solve options."""
    if name not in preset_names():
        raise ConfigError(f"unknown preset {name!r} (presets: {', '.join(preset_names())})")
    values = _read(PRESETS / f"{name}.toml", f"preset {name}")
    return {k: v for k, v in values.items() if k not in _META}


def read_config(path: str | Path) -> dict[str, Any]:
    """A config file's solve options, over those of the preset it names."""
    values = _read(Path(path), f"config file {path}")
    base = read_preset(values["preset"]) if "preset" in values else {}
    return base | {k: v for k, v in values.items() if k not in _META}


def layered(defaults: dict[str, Any], preset: str | None = None, config: str | Path | None = None,
            given: dict[str, Any] | None = None) -> dict[str, Any]:
    """The solve options: `defaults`, then the preset, the config file and the options `given`, each over
    the one before; checked as `Limits` (a bad value: one line)."""
    values = dict(defaults)
    if preset is not None:
        values |= read_preset(preset)
    if config is not None:
        values |= read_config(config)
    values |= given or {}
    make_limits(**values)
    return values
