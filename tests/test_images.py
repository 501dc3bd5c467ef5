"""Image URIs resolve inside the project's image root and nowhere else (issue 7, "Paths")."""

from __future__ import annotations

import base64
import io
import os

import pytest
from PIL import Image

from metrics.images import image_data_uri, resolve_image


def png_bytes(w: int = 8, h: int = 6) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (200, 30, 30)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def cfg(project):
    (project.root / "images" / "img-1.png").write_bytes(png_bytes())
    return project.config


@pytest.mark.parametrize("uri", ["/etc/passwd", "\\\\server\\share\\x.png", "C:\\img\\x.png",
                                 "C:x.png", "~/x.png", "file:///etc/passwd"])
def test_absolute_paths_are_refused(cfg, uri):
    ref = resolve_image(cfg, uri)
    assert ref.kind == "refused" and ref.path is None
    assert "absolute" in ref.reason


@pytest.mark.parametrize("uri", ["../labelqa.toml", "images/../labelqa.toml",
                                 "images/../images/img-1.png", "..\\..\\etc\\passwd", ".."])
def test_dotdot_is_refused_even_inside_the_root(cfg, uri):
    ref = resolve_image(cfg, uri)
    assert ref.kind == "refused" and ref.path is None
    assert "'..'" in ref.reason


def test_symlink_out_of_the_root_is_refused(cfg, tmp_path):
    secret = tmp_path / "secret.png"
    secret.write_bytes(png_bytes())
    os.symlink(secret, cfg.images / "evil.png")
    outside_dir = tmp_path / "elsewhere"
    outside_dir.mkdir()
    (outside_dir / "x.png").write_bytes(png_bytes())
    os.symlink(outside_dir, cfg.images / "linked")
    for uri in ("evil.png", "images/evil.png", "linked/x.png", "images/linked/x.png"):
        ref = resolve_image(cfg, uri)
        assert ref.kind == "refused", uri
        assert "outside the image root" in ref.reason
        with pytest.raises(ValueError):
            image_data_uri(ref)
    # A file of the project folder outside the image root is refused too.
    assert resolve_image(cfg, "labelqa.toml").kind == "refused"


def test_symlink_inside_the_root_is_fine(cfg):
    os.symlink(cfg.images / "img-1.png", cfg.images / "alias.png")
    ref = resolve_image(cfg, "alias.png")
    assert ref.kind == "file" and ref.path == (cfg.images / "img-1.png").resolve()


@pytest.mark.parametrize("uri, clickable", [("http://example.com/a.png", True),
                                            ("https://example.com/a.png?x=1", True),
                                            ("s3://bucket/key/a.png", False),
                                            ("gs://bucket/a.png", False)])
def test_urls_are_links_never_files(cfg, uri, clickable):
    ref = resolve_image(cfg, uri)
    assert ref.kind == "url" and ref.url == uri and ref.path is None
    assert ref.clickable is clickable
    with pytest.raises(ValueError):
        image_data_uri(ref)  # never fetched


@pytest.mark.parametrize("uri", ["javascript:alert(1)", "data:image/png;base64,AAAA",
                                 "ftp://host/x.png"])
def test_other_schemes_are_refused(cfg, uri):
    ref = resolve_image(cfg, uri)
    assert ref.kind == "refused" and "scheme" in ref.reason


@pytest.mark.parametrize("uri", ["images/nope.png", "nope.png"])
def test_missing_file(cfg, uri):
    ref = resolve_image(cfg, uri)
    assert ref.kind == "refused" and "missing" in ref.reason


@pytest.mark.parametrize("uri", [None, "", "   ", "img\x00.png"])
def test_empty_or_control_characters(cfg, uri):
    assert resolve_image(cfg, uri).kind == "refused"


def test_directory_is_not_an_image(cfg):
    (cfg.images / "sub").mkdir()
    ref = resolve_image(cfg, "sub")
    assert ref.kind == "refused" and "regular file" in ref.reason


@pytest.mark.parametrize("uri", ["images/img-1.png", "img-1.png", "./img-1.png"])
def test_good_file(cfg, uri):
    ref = resolve_image(cfg, uri)
    assert ref.kind == "file"
    assert ref.path == (cfg.images / "img-1.png").resolve()
    assert ref.path.is_relative_to(cfg.images.resolve())
    data = image_data_uri(ref)
    assert data.startswith("data:image/png;base64,")
    assert base64.b64decode(data.split(",", 1)[1]) == png_bytes()


def test_jpeg_and_non_images(cfg):
    buf = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buf, format="JPEG")
    (cfg.images / "a.jpg").write_bytes(buf.getvalue())
    assert image_data_uri(resolve_image(cfg, "a.jpg")).startswith("data:image/jpeg;base64,")
    (cfg.images / "fake.png").write_bytes(b"<svg onload=alert(1)>")
    with pytest.raises(ValueError, match="PNG or JPEG"):
        image_data_uri(resolve_image(cfg, "fake.png"))


def test_file_swapped_for_a_symlink_after_resolving_is_refused(cfg, tmp_path):
    ref = resolve_image(cfg, "img-1.png")
    secret = tmp_path / "secret.png"
    secret.write_bytes(png_bytes())
    (cfg.images / "img-1.png").unlink()
    os.symlink(secret, cfg.images / "img-1.png")
    with pytest.raises(ValueError, match="outside"):
        image_data_uri(ref)


def test_image_root_itself_a_symlink(project, tmp_path):
    real = tmp_path / "real-images"
    real.mkdir()
    (real / "img-2.png").write_bytes(png_bytes())
    (project.root / "images").rmdir()
    os.symlink(real, project.root / "images")
    ref = resolve_image(project.config, "images/img-2.png")
    assert ref.kind == "file" and ref.path == (real / "img-2.png").resolve()
