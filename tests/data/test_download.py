"""Downloads against a local HTTP server: success, checksum mismatch, errors, no re-download."""

from __future__ import annotations

import hashlib
import http.server
import io
import socket
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from relgraph.data import build_dataset
from relgraph.data import omniglot as omniglot_module
from relgraph.data.download import DownloadError, download_file, file_checksum
from relgraph.data.omniglot import OMNIGLOT_CHECKSUMS, OMNIGLOT_SETS, download_omniglot


def _tiny_omniglot_zip() -> bytes:
    """An images_background.zip with 2 alphabets x 2 characters x 2 drawers of 10x10 PNGs."""
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for alphabet in ("Greek", "Latin"):
            for c in (1, 2):
                for d in (1, 2):
                    png = io.BytesIO()
                    Image.fromarray(rng.random((10, 10)) > 0.2).save(png, format="PNG")
                    zf.writestr(f"images_background/{alphabet}/character{c:02d}/{c:04d}_{d:02d}.png",
                                png.getvalue())
    return buf.getvalue()


class _Server:
    """Serves ``files`` (name -> bytes) on 127.0.0.1 and counts requests."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.requests: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                server.requests.append(self.path)
                data = server.files.get(self.path.lstrip("/"))
                if data is None:
                    self.send_error(404, "Not Found")
                    return
                self.send_response(200)
                # "short/NAME": the header promises NAME's size, half of it is sent
                full = server.files.get(self.path.lstrip("/").removeprefix("short/"))
                short = self.path.startswith("/short/")
                self.send_header("Content-Length", str(len(full if short else data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy",
                "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    srv = _Server({"hello.bin": b"hello world" * 100,
                   "images_background.zip": _tiny_omniglot_zip()})
    yield srv
    srv.close()


def _digests(data: bytes) -> dict[str, str]:
    return {"md5": hashlib.md5(data).hexdigest(), "sha256": hashlib.sha256(data).hexdigest()}


def test_download_success_verifies_checksums(server: _Server, tmp_path: Path) -> None:
    data = server.files["hello.bin"]
    out = download_file(f"{server.url}/hello.bin", tmp_path / "sub" / "hello.bin",
                        checksums=_digests(data))
    assert out == tmp_path / "sub" / "hello.bin"
    assert out.read_bytes() == data
    assert file_checksum(out, "md5") == hashlib.md5(data).hexdigest()
    assert sorted(p.name for p in out.parent.iterdir()) == ["hello.bin"]  # no temp left


def test_download_checksum_mismatch_leaves_nothing(server: _Server, tmp_path: Path) -> None:
    target = tmp_path / "hello.bin"
    with pytest.raises(DownloadError, match="checksum mismatch") as info:
        download_file(f"{server.url}/hello.bin", target, checksums={"sha256": "0" * 64})
    assert f"{server.url}/hello.bin" in str(info.value)
    assert str(target) in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_a_transfer_cut_short_is_an_error_and_leaves_nothing(server: _Server,
                                                             tmp_path: Path) -> None:
    """No checksum to catch it: the server closes after half of its Content-Length (read()
    just ends), and the half file used to be renamed into place as complete."""
    server.files["short/hello.bin"] = server.files["hello.bin"][:500]
    with pytest.raises(DownloadError, match="stopped after 500 of 1100 bytes"):
        download_file(f"{server.url}/short/hello.bin", tmp_path / "hello.bin")
    assert list(tmp_path.iterdir()) == []


def test_download_404_is_a_clear_error(server: _Server, tmp_path: Path) -> None:
    target = tmp_path / "missing.zip"
    with pytest.raises(DownloadError, match="404") as info:
        download_file(f"{server.url}/missing.zip", target)
    message = str(info.value)
    assert f"{server.url}/missing.zip" in message and str(target) in message
    assert "by hand" in message
    assert list(tmp_path.iterdir()) == []


def test_download_server_down_is_a_clear_error(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("http_proxy", raising=False)
    monkeypatch.delenv("HTTP_PROXY", raising=False)
    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/images_background.zip"
    target = tmp_path / "images_background.zip"
    with pytest.raises(DownloadError) as info:
        download_file(url, target, timeout=5)
    message = str(info.value)
    assert url in message and str(target) in message and "by hand" in message
    assert list(tmp_path.iterdir()) == []


def test_present_file_is_not_downloaded_again(server: _Server, tmp_path: Path) -> None:
    target = tmp_path / "hello.bin"
    download_file(f"{server.url}/hello.bin", target)
    assert len(server.requests) == 1
    target.write_bytes(b"kept")
    download_file(f"{server.url}/hello.bin", target, checksums=_digests(b"other"))
    assert len(server.requests) == 1
    assert target.read_bytes() == b"kept"


def test_download_omniglot_then_read(server: _Server, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    table = {"images_background": _digests(server.files["images_background.zip"])}
    paths = download_omniglot(tmp_path, ["images_background"], base_url=server.url,
                              checksums=table)
    assert paths == [tmp_path / "images_background.zip"]
    assert server.requests == ["/images_background.zip"]
    # Omniglot(download=True) uses the module's URL and table; point them at the local server.
    monkeypatch.setattr(omniglot_module, "OMNIGLOT_BASE_URL", server.url)
    monkeypatch.setattr(omniglot_module, "OMNIGLOT_CHECKSUMS", table)
    root = tmp_path / "fresh"
    ds = build_dataset("omniglot", root, download=True, sets=["images_background"], image_size=8)
    assert ds.summary() == {"classes": 4, "examples": 8, "alphabets": 2}
    assert (root / "images_background.zip").is_file()
    assert len(server.requests) == 2
    build_dataset("omniglot", root, download=True, sets=["images_background"])
    assert len(server.requests) == 2  # already there
    # a damaged copy in place (a partial download) is named, not trusted
    whole = (root / "images_background.zip").read_bytes()
    (root / "images_background.zip").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ValueError, match="is not the official images_background.zip.*delete it"):
        build_dataset("omniglot", root, download=True, sets=["images_background"])


def test_download_omniglot_bad_checksum_table(server: _Server, tmp_path: Path) -> None:
    table = {"images_background": {"md5": "0" * 32}}
    with pytest.raises(DownloadError, match="checksum mismatch"):
        download_omniglot(tmp_path, ["images_background"], base_url=server.url, checksums=table)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="unknown Omniglot set"):
        download_omniglot(tmp_path, ["images_nope"], base_url=server.url, checksums=table)


def test_official_checksum_table() -> None:
    assert set(OMNIGLOT_CHECKSUMS) == set(OMNIGLOT_SETS)
    assert OMNIGLOT_CHECKSUMS["images_background"]["md5"] == "68d2efa1b9178cc56df9314c21c6e718"
    assert OMNIGLOT_CHECKSUMS["images_evaluation"]["md5"] == "6b91aef0f799c5bb55b94e3f2daec811"
    assert omniglot_module.OMNIGLOT_BASE_URL.startswith("https://")


@pytest.mark.data
@pytest.mark.parametrize("name", ["images_background_small1", "images_background_small2"])
def test_small_zip_checksums_match_real_files(shared_data: Path, name: str) -> None:
    path = shared_data / "omniglot" / f"{name}.zip"
    for algo, digest in OMNIGLOT_CHECKSUMS[name].items():
        assert file_checksum(path, algo) == digest
