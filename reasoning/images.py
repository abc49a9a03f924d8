"""Images for vision-language prompts: load and check them before any model runs.

Items may be file paths (str or Path), raw bytes, ``data:image/...;base64,...`` URLs or PIL images.
specstep never fetches anything: an http(s) URL is refused (download it first, pass the file or bytes).
Every bad item raises ConfigError with one line that names the item and the problem.
`data_url` turns a loaded image back into a PNG data URL (for engines that take images over HTTP).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import warnings
import weakref
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from reasoning.errors import ConfigError

MAX_BYTES = 20_000_000
MAX_PIXELS = 40_000_000


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:12]


def _one_line(text: str, limit: int = 120) -> str:
    text = text if text.isprintable() else repr(text)[1:-1]
    return text if len(text) <= limit else text[: limit - 3] + "..."


def image_ref(item: Any) -> str:
    """A short printable reference to an image item, for records: the path as given, ``bytes:<sha256
    prefix>`` for raw bytes and data URLs, ``pil:WxH:<sha256 prefix>`` for PIL images."""
    if isinstance(item, Path):
        return _one_line(str(item))
    if isinstance(item, str):
        if item[:5].lower() == "data:":
            head, _, payload = item.partition(",")
            try:
                data = base64.b64decode(payload, validate=True) if head.lower().endswith(";base64") else None
            except (binascii.Error, ValueError):
                data = None
            return f"bytes:{_sha(data if data is not None else item.encode())}"
        return _one_line(item)
    if isinstance(item, (bytes, bytearray, memoryview)):
        return f"bytes:{_sha(bytes(item))}"
    if isinstance(item, Image.Image):
        h = hashlib.sha256(f"{item.mode}{item.size}".encode())
        h.update(item.tobytes())
        return f"pil:{item.width}x{item.height}:{h.hexdigest()[:12]}"
    return f"<{type(item).__name__}>"


def _name(item: Any) -> str:
    """How an error names an item (computed only on error)."""
    if isinstance(item, str) and item[:5].lower() == "data:":
        return f"{_one_line(item.partition(',')[0], 40)},... ({len(item)} chars)"
    if isinstance(item, (bytes, bytearray, memoryview)):
        return f"{image_ref(item)} ({len(bytes(item))} bytes)"
    if isinstance(item, Image.Image):
        return f"<PIL image {item.width}x{item.height} {item.mode}>"
    return image_ref(item)


def _error(item: Any, problem: str) -> ConfigError:
    return ConfigError(f"image {_name(item)}: {problem}")


def _check_pixels(item: Any, width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise _error(item, f"too large: {width}x{height} = {width * height} pixels > max_pixels={max_pixels}")


def _to_rgb(im: Image.Image) -> Image.Image:
    """RGB; transparent parts on white (a plain convert would show them as whatever colour they hide)."""
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        out = Image.new("RGB", rgba.size, (255, 255, 255))
        out.paste(rgba, mask=rgba.getchannel("A"))
        return out
    return im.convert("RGB")


def _decode(data: bytes, item: Any, max_pixels: int) -> Image.Image:
    """Open lazily, check the pixel count from the header, then decode (which also catches truncation)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            im = Image.open(io.BytesIO(data))
        except UnidentifiedImageError:
            raise _error(item, "not an image (unrecognised format)") from None
        except Image.DecompressionBombError:
            raise _error(item, f"too large: over max_pixels={max_pixels}") from None
        except OSError as e:
            raise _error(item, f"cannot open: {_one_line(str(e))}") from None
        _check_pixels(item, im.width, im.height, max_pixels)
        try:
            im.load()
            return _to_rgb(im)
        except (OSError, ValueError, SyntaxError) as e:
            raise _error(item, f"corrupt or truncated image: {_one_line(str(e))}") from None


def _data_url(item: str, max_bytes: int) -> bytes:
    head, sep, payload = item.partition(",")
    if not sep:
        raise _error(item, "bad data URL: no ',' before the data")
    params = head[5:].lower().split(";")
    mediatype = params[0]
    if mediatype and not mediatype.startswith("image/"):
        raise _error(item, f"data URL is {mediatype}, not an image")
    if "base64" not in params[1:]:
        raise _error(item, "data URL is not base64 (use data:image/...;base64,...)")
    if len(payload) > (max_bytes * 4) // 3 + 4:
        raise _error(item, f"too large: over max_bytes={max_bytes}")
    try:
        data = base64.b64decode("".join(payload.split()), validate=True)
    except (binascii.Error, ValueError):
        raise _error(item, "bad base64 in data URL") from None
    if not data:
        raise _error(item, "empty data URL")
    return data


def _read_file(path: Path, max_bytes: int) -> bytes:
    if not path.exists():
        raise _error(path, "file not found")
    if path.is_dir():
        raise _error(path, "is a directory, not an image file")
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise _error(path, f"too large: {size} bytes > max_bytes={max_bytes}")
        return path.read_bytes()
    except OSError as e:
        raise _error(path, f"cannot read: {e.strerror or e}") from None


def load_image(item: Any, max_bytes: int = MAX_BYTES, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """One image item as an RGB PIL image (see the module docstring for the accepted forms)."""
    if isinstance(item, Image.Image):
        _check_pixels(item, item.width, item.height, max_pixels)
        try:
            item.load()
            return _to_rgb(item)
        except (OSError, ValueError) as e:
            raise _error(item, f"corrupt or truncated image: {_one_line(str(e))}") from None
    if isinstance(item, (bytes, bytearray, memoryview)):
        data = bytes(item)
        if len(data) > max_bytes:
            raise _error(item, f"too large: {len(data)} bytes > max_bytes={max_bytes}")
        if not data:
            raise _error(item, "empty bytes")
        return _decode(data, item, max_pixels)
    if isinstance(item, str):
        low = item.strip()[:8].lower()
        if low.startswith(("http://", "https://")):
            raise _error(item, "http(s) URLs are not fetched: download it first and pass the file or bytes")
        if low.startswith("data:"):
            data = _data_url(item.strip(), max_bytes)
            if len(data) > max_bytes:
                raise _error(item, f"too large: {len(data)} bytes > max_bytes={max_bytes}")
            return _decode(data, item, max_pixels)
        if low.startswith("file://"):
            item = item.strip()[7:]
        if not item.strip():
            raise _error("''", "empty path")
        item = Path(item).expanduser()
    if isinstance(item, Path):
        return _decode(_read_file(item, max_bytes), item, max_pixels)
    raise _error(item, "unsupported item: give a file path, bytes, a data:image/...;base64 URL or a PIL image")


def load_images(items: Iterable[Any] | Any, max_bytes: int = MAX_BYTES,
                max_pixels: int = MAX_PIXELS) -> list[Image.Image]:
    """Load and check every item (all of them, before any model runs); RGB PIL images in order."""
    if isinstance(items, (str, bytes, bytearray, memoryview, Path, Image.Image)):
        items = [items]
    return [load_image(item, max_bytes, max_pixels) for item in items]


_URLS: dict[int, tuple[weakref.ref, str]] = {}  # id(image) -> (image, its data URL); sessions resend images


def data_url(image: Any) -> str:
    """A ``data:image/png;base64,...`` URL of an image (lossless); anything `load_image` takes."""
    im = image if isinstance(image, Image.Image) else load_image(image)
    hit = _URLS.get(id(im))
    if hit is not None and hit[0]() is im:
        return hit[1]
    buf = io.BytesIO()
    _to_rgb(im).save(buf, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
    if len(_URLS) >= 64:
        _URLS.clear()
    _URLS[id(im)] = (weakref.ref(im), url)
    return url
