"""Safe resolution of annotation image URIs (DESIGN "Project config", issue 7 "Paths").

An export names its image with ``image.uri``. The dashboard shows the image only when the
URI is a relative path that resolves to a file inside the project's image root
(``[project] images``); everything else is refused with a reason, and no file outside the
root is ever read:

- absolute paths (``/etc/passwd``, ``C:\\x``, ``file:///x``) are refused;
- a ``..`` component anywhere is refused, even when it would stay inside the root;
- a path that resolves (through symlinks) outside the root is refused;
- a missing file, or one that is not a regular file, is refused.

``http(s)://``, ``s3://`` and ``gs://`` URIs are URLs: shown as links (or text), never
fetched by the server. Any other scheme (``javascript:``, ``data:``, ...) is refused.

A relative URI is looked up under the image root first (``img-1.png`` ->
``<images>/img-1.png``) and then under the project folder, as the demo writes it
(``images/img-1.png`` -> ``<project>/images/img-1.png``); both must land inside the image
root after ``Path.resolve()``.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Literal

from metrics.config import ProjectConfig

__all__ = ["MAX_IMAGE_BYTES", "URL_SCHEMES", "ImageRef", "image_data_uri", "resolve_image"]

#: Schemes shown as links or text, never fetched.
URL_SCHEMES = ("http", "https", "s3", "gs")
#: The largest image file read for the drill-down overlay.
MAX_IMAGE_BYTES = 32 * 1024 * 1024

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*):")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class ImageRef:
    """Where an image URI points: ``kind`` is ``file`` (``path`` inside ``root``),
    ``url`` (``url``, never fetched) or ``refused`` (``reason`` says why)."""

    uri: str | None
    kind: Literal["file", "url", "refused"]
    path: Path | None = None
    url: str | None = None
    reason: str | None = None
    root: Path | None = None

    @property
    def clickable(self) -> bool:
        """An http(s) URL a browser can open as a link (s3/gs are shown as text)."""
        return self.kind == "url" and (self.url or "").lower().startswith(("http://", "https://"))


def _refused(uri: str | None, reason: str, root: Path | None = None) -> ImageRef:
    return ImageRef(uri=uri, kind="refused", reason=reason, root=root)


def resolve_image(config: ProjectConfig, uri: str | None) -> ImageRef:
    """Resolve an annotation's image URI safely against ``config.images``.

    Returns an :class:`ImageRef`; never raises for bad input and never reads the file.
    """
    root = Path(config.images).resolve()
    if uri is None or not isinstance(uri, str) or not uri.strip():
        return _refused(uri, "no image URI in the annotation", root)
    if _CONTROL.search(uri):
        return _refused(uri, "the URI contains control characters", root)
    scheme = _SCHEME.match(uri)
    if scheme and len(scheme.group(1)) > 1:
        name = scheme.group(1).lower()
        if name in URL_SCHEMES:
            return ImageRef(uri=uri, kind="url", url=uri, root=root)
        if name == "file":
            return _refused(uri, "file: URIs are absolute paths; use a path relative to "
                                 "the image root", root)
        return _refused(uri, f"unsupported URI scheme {name!r} (only relative paths, "
                             f"{', '.join(s + '://' for s in URL_SCHEMES)})", root)
    if (uri.startswith(("/", "\\", "~")) or PurePosixPath(uri).is_absolute()
            or PureWindowsPath(uri).is_absolute() or PureWindowsPath(uri).drive):
        return _refused(uri, "absolute path: image URIs must be relative to the image root",
                        root)
    parts = re.split(r"[/\\]", uri)
    if ".." in parts:
        return _refused(uri, "the path contains '..': refused", root)
    rel = Path(*[p for p in parts if p not in ("", ".")]) if any(
        p not in ("", ".") for p in parts) else None
    if rel is None:
        return _refused(uri, "the URI names no file", root)
    escaped = False
    for base in (Path(config.images), Path(config.root)):
        candidate = base / rel
        if not candidate.exists() and not candidate.is_symlink():
            continue
        resolved = candidate.resolve()
        if not resolved.is_relative_to(root):
            escaped = True
            continue
        if not resolved.is_file():
            return _refused(uri, "not a regular file", root)
        return ImageRef(uri=uri, kind="file", path=resolved, root=root)
    if escaped:
        return _refused(uri, "resolves outside the image root (a symlink?): refused", root)
    return _refused(uri, f"missing file: no {rel.as_posix()} under the image root", root)


_MAGIC = ((b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"))


def image_data_uri(ref: ImageRef, *, max_bytes: int = MAX_IMAGE_BYTES) -> str:
    """The PNG or JPEG file of a ``file`` ref as a ``data:`` URI for the overlay.

    The path is resolved again and checked against the root right before reading (a
    symlink swapped in since :func:`resolve_image` is refused).

    Raises
    ------
    ValueError
        With the reason when the ref is not a readable PNG/JPEG file inside its root.
    """
    if ref.kind != "file" or ref.path is None or ref.root is None:
        raise ValueError(ref.reason or f"not a local image ({ref.kind})")
    path = ref.path.resolve()
    if not path.is_relative_to(ref.root) or not path.is_file():
        raise ValueError("the image file moved outside the image root: refused")
    size = path.stat().st_size
    if size > max_bytes:
        raise ValueError(f"image is {size / 1e6:.1f} MB, over the {max_bytes / 1e6:.0f} MB "
                         "display limit")
    data = path.read_bytes()
    for magic, mime in _MAGIC:
        if data.startswith(magic):
            return f"data:{mime};base64," + base64.b64encode(data).decode("ascii")
    raise ValueError("not a PNG or JPEG file")
