"""Downloading the official files: md5-checked, saying where, leaving nothing behind on failure."""

import functools
import hashlib
import http.server
import os
import socket
import threading

import pytest

from benchmark import data
from benchmark import download as download_module
from benchmark.data import load_omniglot
from benchmark.download import download_omniglot
from benchmark.errors import DataError
SMALL_ALPHABETS = ["Balinese", "Early_Aramaic", "Greek", "Korean", "Latin"]


def test_failed_download_is_explained(tmp_path, monkeypatch):
    unreachable = functools.partial(download_omniglot, base_url=closed_port_url())
    monkeypatch.setattr(data, "download_omniglot", unreachable)
    with pytest.raises(DataError) as error:
        load_omniglot(tmp_path, progress=False)
    message = str(error.value)
    assert str(tmp_path) in message and "given by --data-dir" in message and "download failed" in message
    assert "127.0.0.1" in message and "OMNIGLOT_DIR=DIR" in message and "run_benchmark.py download" in message


def test_a_failed_first_download_leaves_no_folder_behind(tmp_path, monkeypatch):
    unreachable = functools.partial(download_omniglot, base_url=closed_port_url())
    monkeypatch.setattr(data, "download_omniglot", unreachable)
    wrong = tmp_path / "typo" / "omniglot"  # as a mistyped OMNIGLOT_DIR would name it
    monkeypatch.setenv("OMNIGLOT_DIR", str(wrong))
    with pytest.raises(DataError, match="download failed"):
        load_omniglot(None, progress=False)
    assert not (tmp_path / "typo").exists()


def test_a_failed_download_keeps_the_files_it_verified(server, tmp_path, monkeypatch):
    root, url = server
    content = os.urandom(2000)
    (root / "images_background.zip").write_bytes(content)  # images_evaluation.zip is missing: 404
    monkeypatch.setitem(data.OFFICIAL_FILES, "images_background.zip", hashlib.md5(content).hexdigest())
    dest = tmp_path / "new" / "omniglot"
    with pytest.raises(DataError, match="HTTP 404"):
        download_omniglot(dest, base_url=url, progress=False, names=["images_background.zip",
                                                                      "images_evaluation.zip"])
    assert [p.name for p in dest.iterdir()] == ["images_background.zip"]


def test_download_command_says_where_and_skips_data_already_present(omniglot_dir, tmp_path, capsys):
    from benchmark.cli import main

    present = tmp_path / "present"
    present.mkdir()
    for name in ("omniglot.npz", "all_runs.zip"):
        (present / name).symlink_to((omniglot_dir / name).resolve())
    assert main(["download", "--data-dir", str(present)]) == 0  # no network: it is all there
    out = capsys.readouterr().out
    assert f"already present in {present} (given by --data-dir)" in out and "nothing to download" in out
    assert sorted(p.name for p in present.iterdir()) == ["all_runs.zip", "omniglot.npz"]


def test_download_command_says_where_it_downloads_to(tmp_path, monkeypatch, capsys):
    from benchmark.cli import main

    monkeypatch.setattr(data, "OFFICIAL_BASE_URL", closed_port_url())
    monkeypatch.setattr(download_module, "OFFICIAL_BASE_URL", data.OFFICIAL_BASE_URL)
    monkeypatch.setattr(download_module.download_omniglot, "__kwdefaults__",
                        {**download_module.download_omniglot.__kwdefaults__, "base_url": data.OFFICIAL_BASE_URL})
    target = tmp_path / "fresh"
    assert main(["download", "--data-dir", str(target)]) == 2
    err = capsys.readouterr().err
    assert f"downloading the official Omniglot files into {target} (given by --data-dir)" in err
    assert err.strip().splitlines()[-1].startswith("error: could not download") and not target.exists()


# ---------------------------------------------------------------- downloading

class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path):
    """(folder served, base URL) of an HTTP server on 127.0.0.1."""
    root = tmp_path / "server"
    (root / "one-shot-classification").mkdir(parents=True)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=root))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def test_download_saves_a_good_file_and_skips_it_next_time(server, tmp_path, monkeypatch):
    root, url = server
    content = os.urandom(3000)
    (root / "images_evaluation.zip").write_bytes(content)
    monkeypatch.setitem(data.OFFICIAL_FILES, "images_evaluation.zip", hashlib.md5(content).hexdigest())
    dest = tmp_path / "dest"
    paths = download_omniglot(dest, base_url=url, progress=False, names=["images_evaluation.zip"])
    assert paths == [dest / "images_evaluation.zip"] and paths[0].read_bytes() == content
    assert [p.name for p in dest.iterdir()] == ["images_evaluation.zip"]
    # Present with the right md5: no network needed.
    download_omniglot(dest, base_url=closed_port_url(), progress=False, names=["images_evaluation.zip"])


def test_official_runs_are_downloaded_from_their_subfolder(server, tmp_path, monkeypatch):
    root, url = server
    content = os.urandom(1000)
    (root / "one-shot-classification" / "all_runs.zip").write_bytes(content)
    monkeypatch.setitem(data.OFFICIAL_FILES, "all_runs.zip", hashlib.md5(content).hexdigest())
    with pytest.raises(DataError, match="all_runs.zip is not in"):
        data.official_runs_zip(tmp_path, download=False)
    path = data.official_runs_zip(tmp_path, base_url=url, progress=False)
    assert path == tmp_path / "all_runs.zip" and path.read_bytes() == content


def test_corrupt_download_is_refused_and_removed(server, tmp_path):
    root, url = server
    (root / "images_background.zip").write_bytes(b"not the official file")
    actual = hashlib.md5(b"not the official file").hexdigest()
    dest = tmp_path / "dest"
    with pytest.raises(DataError) as error:
        download_omniglot(dest, base_url=url, progress=False, names=["images_background.zip"])
    message = str(error.value)
    assert "images_background.zip" in message and actual in message
    assert data.OFFICIAL_FILES["images_background.zip"] in message
    assert not dest.exists()  # nothing saved, and the folder the download made is gone again


def test_missing_remote_file_is_a_data_error(server, tmp_path):
    _, url = server
    with pytest.raises(DataError, match="HTTP 404"):
        download_omniglot(tmp_path, base_url=url, progress=False, names=["images_background.zip"])


def test_unreachable_server_is_a_data_error(tmp_path):
    with pytest.raises(DataError) as error:
        download_omniglot(tmp_path, base_url=closed_port_url(), progress=False)
    assert "--data-dir" in str(error.value) and "OMNIGLOT_DIR" in str(error.value)
    assert list(tmp_path.iterdir()) == []
