"""torch_elmo.hub: published models by name, URL or archive, downloaded once into the cache,
checked, offline-safe. Against a real HTTP server that each test starts on the loopback address
(http.server in a thread, with byte ranges, and faults on demand); nothing leaves 127.0.0.1."""

from __future__ import annotations

import hashlib
import http.server
import io
import ipaddress
import json
import os
import queue
import re
import socket
import stat
import subprocess
import sys
import tarfile
import threading
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest

from torch_elmo import Elmo, ElmoEmbedder, batch_to_ids, hub, load_bilm
from torch_elmo.cli import main

from .conftest import MODEL

OPTIONS, WEIGHTS = MODEL / "options.json", MODEL / "lm_weights.hdf5"
SENTENCE = ["The", "bank", "of", "the", "river", "."]
SRC = Path(__file__).resolve().parents[1] / "src"
README = Path(__file__).resolve().parents[1] / "README.md"


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buffer.getvalue()


def tar_bytes(members: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    links = links or {}
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as t:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
        for name, target in links.items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            t.addfile(info)
    return buffer.getvalue()


OPTIONS_BYTES, WEIGHTS_BYTES = OPTIONS.read_bytes(), WEIGHTS.read_bytes()
VOCAB_BYTES = (MODEL / "vocab_test.txt").read_bytes()
# as the NLPL repository serves ELMo models: options.json + model.hdf5 (+ vocab.txt) at the top
MODEL_ZIP = zip_bytes({"options.json": OPTIONS_BYTES, "model.hdf5": WEIGHTS_BYTES, "vocab.txt": VOCAB_BYTES})
MODEL_TGZ = tar_bytes({"elmo/options.json": OPTIONS_BYTES, "elmo/weights.hdf5": WEIGHTS_BYTES})


class Server:
    """A real HTTP server on 127.0.0.1 serving `files` (path -> bytes), with byte ranges unless
    `ranges` is False; `requests` records (path, Range header) of every request; `cut[path] = n`
    ends the next response for path after n bytes of its body (the client sees a broken
    transfer); `hold[path]` (an Event) stops each response for path half-way until it is set,
    `started` being set when one is stopped so."""

    def __init__(self):
        self.files = {"/model/options.json": OPTIONS_BYTES, "/model/lm_weights.hdf5": WEIGHTS_BYTES,
                      "/model.zip": MODEL_ZIP, "/model.tar.gz": MODEL_TGZ}
        self.ranges = True
        self.requests: list[tuple[str, str | None]] = []
        self.cut: dict[str, int] = {}
        self.hold: dict[str, threading.Event] = {}
        self.started = threading.Event()
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                owner.requests.append((self.path, self.headers.get("Range")))
                body = owner.files.get(self.path)
                if body is None:
                    self.send_error(404, "Not Found")
                    return
                start, ask = 0, self.headers.get("Range")
                if ask and owner.ranges:
                    start = int(re.fullmatch(r"bytes=(\d+)-", ask).group(1))
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                self.send_header("ETag", '"' + hashlib.sha256(body).hexdigest()[:16] + '"')
                self.end_headers()
                data = body[start:]
                if self.path in owner.cut:
                    data = data[: owner.cut.pop(self.path)]
                if self.path in owner.hold:
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    owner.started.set()
                    owner.hold[self.path].wait(60)
                    data = data[len(data) // 2 :]
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def gets(self, path: str) -> list[str | None]:
        """The Range header of each request for path."""
        return [r for p, r in self.requests if p == path]

    def close(self):
        for event in self.hold.values():
            event.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


@pytest.fixture(autouse=True)
def loopback_only(tmp_path, monkeypatch):
    """Each test has its own empty cache, is online, retries at once, and cannot connect beyond
    the loopback address."""
    monkeypatch.setenv(hub.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv(hub.OFFLINE_ENV, raising=False)
    monkeypatch.setattr(hub, "RETRY_WAIT", 0.0)
    connect = socket.socket.connect

    def loopback_connect(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            assert ipaddress.ip_address(address[0]).is_loopback, f"a test tried to reach {address}"
            CONNECTED.append(address)
        return connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", loopback_connect)
    CONNECTED.clear()


CONNECTED: list = []  # the addresses this test's sockets connected to (all checked loopback)


def one_line(error: BaseException) -> str:
    message = str(error)
    assert "\n" not in message and message.strip() == message, message
    return message


def embedding(embedder: ElmoEmbedder) -> np.ndarray:
    return embedder.embed_sentence(SENTENCE)


@pytest.fixture(scope="module")
def expected() -> np.ndarray:
    return embedding(ElmoEmbedder(OPTIONS, WEIGHTS))


# --------------------------------------------------------------------------------------------
# The cache


def test_the_cache_folder_is_the_argument_the_env_var_or_the_users_cache(tmp_path, monkeypatch):
    assert hub.cache_dir(tmp_path / "x") == tmp_path / "x"
    assert hub.cache_dir() == tmp_path / "cache"
    monkeypatch.delenv(hub.CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert hub.cache_dir() == tmp_path / "xdg" / "torch-elmo"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert hub.cache_dir() == tmp_path / "home" / ".cache" / "torch-elmo"
    url = "https://example.org/models/elmo_weights.hdf5"
    assert hub.cached_file(url, tmp_path).parent == tmp_path / "downloads"
    assert re.fullmatch(r"[0-9a-f]{16}-elmo_weights\.hdf5", hub.cached_file(url, tmp_path).name)
    assert hub.cached_file(url + "?v=2", tmp_path) != hub.cached_file(url, tmp_path)


def test_first_use_downloads_and_loads_the_second_makes_no_request(server, expected, tmp_path):
    options_url, weights_url = server.url("/model/options.json"), server.url("/model/lm_weights.hdf5")
    np.testing.assert_array_equal(embedding(ElmoEmbedder.from_pretrained(options_url, weight_file=weights_url)),
                                  expected)
    assert sorted(server.requests) == [("/model/lm_weights.hdf5", None), ("/model/options.json", None)]
    assert len(CONNECTED) == 2  # the downloads went through the loopback guard
    cached = hub.cached_file(weights_url)
    assert cached.read_bytes() == WEIGHTS_BYTES
    record = json.loads(cached.with_name(cached.name + ".json").read_text())
    assert record["url"] == weights_url and record["size"] == len(WEIGHTS_BYTES)
    assert record["sha256"] == hashlib.sha256(WEIGHTS_BYTES).hexdigest()
    assert not list(cached.parent.glob("*.part*"))
    # later uses, in every place a model is taken: the cache only
    np.testing.assert_array_equal(embedding(ElmoEmbedder(options_url, weights_url)), expected)
    elmo = Elmo(options_url, weights_url, 1, dropout=0.0)
    reference = Elmo(OPTIONS, WEIGHTS, 1, dropout=0.0)
    ids = batch_to_ids([SENTENCE])
    np.testing.assert_array_equal(elmo(ids)["elmo_representations"][0].detach(),
                                  reference(ids)["elmo_representations"][0].detach())
    assert load_bilm(options_url, weights_url).config == load_bilm(OPTIONS, WEIGHTS).config
    Elmo.from_pretrained(options_url, weight_file=weights_url)
    assert len(server.requests) == 2
    # another cache folder, by argument: downloaded there
    hub.resolve_model(options_url, weights_url, cache_dir=tmp_path / "other")
    assert len(server.requests) == 4 and hub.cached_file(weights_url, tmp_path / "other").is_file()


def test_a_published_name_is_looked_up_in_the_catalogue(server, expected, monkeypatch, capsys):
    fixture = hub.PublishedModel(
        "fixture", "bilm-tf's test model", server.url("/model/options.json"), server.url("/model/lm_weights.hdf5"),
        output_dim=32, parameters_m=None, training_data="none", licence="Apache-2.0", source="tests",
        options_size=len(OPTIONS_BYTES), weights_sha256=hashlib.sha256(WEIGHTS_BYTES).hexdigest())
    monkeypatch.setattr(hub, "CATALOGUE", hub.CATALOGUE + (fixture,))
    np.testing.assert_array_equal(embedding(ElmoEmbedder.from_pretrained("fixture")), expected)
    np.testing.assert_array_equal(embedding(ElmoEmbedder("Fixture")), expected)  # a name alone, any case
    assert load_bilm("fixture").config.output_dim == 32
    assert len(server.requests) == 2
    assert "| `fixture` | bilm-tf's test model | 32 |" in hub.models_table()
    with pytest.raises(hub.HubError, match=r"nonsense: .*no published model of that name \(small, medium"):
        hub.resolve_model("nonsense")
    # a published checksum that the server's file does not match: never accepted
    wrong = hub.PublishedModel("wrong", "x", server.url("/model/options.json"), server.url("/model.zip"),
                               None, None, None, None, "tests", weights_sha256="0" * 64)
    monkeypatch.setattr(hub, "CATALOGUE", hub.CATALOGUE + (wrong,))
    with pytest.raises(hub.HubError, match="the download does not check out .*not the published 0000") as error:
        hub.resolve_model("wrong")
    one_line(error.value)
    assert not hub.cached_file(server.url("/model.zip")).exists()


def test_the_catalogue_lists_the_published_models():
    names = [m.name for m in hub.CATALOGUE]
    assert names[:5] == ["small", "medium", "original", "original-5.5b", "pubmed"] and len(set(names)) == len(names)
    for m in hub.CATALOGUE:
        assert m.options_url.startswith("https://") and m.weights_url.startswith("https://"), m
        assert m.options_url.endswith(".json") and m.weights_url.endswith(".hdf5"), m
        assert m.source, m
    original = hub.published_model("original")
    assert original.weights_url.endswith("/elmo_2x4096_512_2048cnn_2xhighway_weights.hdf5")
    assert (original.output_dim, original.parameters_m) == (1024, 93.6)
    assert hub.published_model("small").output_dim == 256 and hub.published_model("medium").output_dim == 512


def test_the_readme_shows_the_catalogue():
    text = README.read_text(encoding="utf-8")
    start, end = "<!-- models-table: generated by `elmo models` -->\n", "<!-- /models-table -->"
    assert start in text and end in text
    assert text.split(start, 1)[1].split(end, 1)[0] == hub.models_table()


# --------------------------------------------------------------------------------------------
# Archives and folders


def test_archives_load_in_one_step_extracted_once(server, expected, tmp_path):
    zip_url, tgz_url = server.url("/model.zip"), server.url("/model.tar.gz")
    files = hub.resolve_model(zip_url)
    assert (files.options.name, files.weights.name, files.vocab.name) == ("options.json", "model.hdf5", "vocab.txt")
    assert files.weights.read_bytes() == WEIGHTS_BYTES and files.options.parent.parent == hub.cache_dir() / "extracted"
    np.testing.assert_array_equal(embedding(ElmoEmbedder.from_pretrained(zip_url)), expected)
    np.testing.assert_array_equal(embedding(ElmoEmbedder.from_pretrained(tgz_url)), expected)  # in a subfolder
    assert hub.resolve_model(tgz_url).weights.name == "weights.hdf5"
    assert server.gets("/model.zip") == [None] and server.gets("/model.tar.gz") == [None]
    assert hub.resolve_model(zip_url) == files
    # a local archive: extracted into the cache once; a changed one anew
    archive = tmp_path / "local.zip"
    archive.write_bytes(MODEL_ZIP)
    local = hub.resolve_model(archive)
    assert local.weights.read_bytes() == WEIGHTS_BYTES and hub.resolve_model(str(archive)) == local
    archive.write_bytes(zip_bytes({"m/options.json": OPTIONS_BYTES, "m/model.hdf5": WEIGHTS_BYTES}))
    assert hub.resolve_model(archive).options.parent.name == "m"
    np.testing.assert_array_equal(embedding(ElmoEmbedder(archive)), expected)
    # a folder in bilm-tf's layout
    assert hub.resolve_model(MODEL) == (OPTIONS, WEIGHTS, MODEL / "vocab_test.txt")


def test_archive_members_cannot_leave_the_extraction_folder(tmp_path):
    for name, data in [("dotdot.zip", zip_bytes({"../evil.txt": b"x", "options.json": OPTIONS_BYTES})),
                       ("absolute.zip", zip_bytes({"/tmp/evil.txt": b"x"})),
                       ("dotdot.tar.gz", tar_bytes({"model/../../evil.txt": b"x"})),
                       ("link.tar.gz", tar_bytes({"options.json": OPTIONS_BYTES},
                                                 links={"model.hdf5": "/etc/passwd"}))]:
        archive = tmp_path / name
        archive.write_bytes(data)
        with pytest.raises(hub.HubError, match="refusing to extract") as error:
            hub.resolve_model(archive)
        assert str(archive) in one_line(error.value)
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "cache" / "evil.txt").exists()
    assert not Path("/tmp/evil.txt").exists() or Path("/tmp/evil.txt").read_bytes() != b"x"
    assert [p for p in (tmp_path / "cache" / "extracted").iterdir() if p.is_dir()] == []  # nothing half-extracted
    empty = tmp_path / "empty.zip"
    empty.write_bytes(zip_bytes({"README": b"no model here"}))
    with pytest.raises(hub.HubError, match="no options.json"):
        hub.resolve_model(empty)


def test_downloads_and_extractions_are_readable_as_the_umask_says(server):
    previous = os.umask(0o002)
    try:
        weights = hub.download(server.url("/model/lm_weights.hdf5"))
        files = hub.resolve_model(server.url("/model.tar.gz"))
    finally:
        os.umask(previous)
    mode = lambda p: stat.S_IMODE(p.stat().st_mode)  # noqa: E731
    assert mode(weights) == 0o664 and mode(weights.with_name(weights.name + ".json")) == 0o664
    assert mode(files.weights) == 0o664 and mode(files.options) == 0o664
    assert mode(files.options.parent) == 0o775 and mode(files.options.parent.parent) == 0o775


# --------------------------------------------------------------------------------------------
# Broken transfers, damaged files, concurrent processes


def test_an_interrupted_transfer_resumes_where_it_stopped(server):
    url, path = server.url("/model/lm_weights.hdf5"), "/model/lm_weights.hdf5"
    server.cut[path] = 200_000
    assert hub.download(url).read_bytes() == WEIGHTS_BYTES
    first, second = server.gets(path)
    assert first is None and 0 < resumed_at(second) <= 200_000  # at most the chunk being read is lost


def resumed_at(range_header: str) -> int:
    return int(re.fullmatch(r"bytes=(\d+)-", range_header).group(1))


def test_an_interrupted_transfer_restarts_where_the_server_has_no_ranges(server):
    url, path = server.url("/model/lm_weights.hdf5"), "/model/lm_weights.hdf5"
    server.ranges = False
    server.cut[path] = 200_000
    assert hub.download(url).read_bytes() == WEIGHTS_BYTES
    first, second = server.gets(path)
    assert first is None and resumed_at(second) > 0  # asked to resume, sent the whole file: rewritten


def test_a_transfer_left_by_a_killed_process_is_resumed(server):
    url = server.url("/model/lm_weights.hdf5")
    cached = hub.cached_file(url)
    cached.parent.mkdir(parents=True)
    cached.with_name(cached.name + ".part").write_bytes(WEIGHTS_BYTES[:1000])
    cached.with_name(cached.name + ".part.json").write_text(json.dumps({"url": url}))
    assert hub.download(url).read_bytes() == WEIGHTS_BYTES
    assert server.gets("/model/lm_weights.hdf5") == ["bytes=1000-"]


def test_a_transfer_that_keeps_breaking_is_an_error_that_keeps_what_arrived(server, monkeypatch):
    url, path = server.url("/model/lm_weights.hdf5"), "/model/lm_weights.hdf5"
    monkeypatch.setattr(hub, "ATTEMPTS", 2)
    server.ranges = False

    class Cuts(dict):  # every response cut short
        def __contains__(self, key):
            return key == path

        def pop(self, key, *default):
            return 200_000

    server.cut = Cuts()
    with pytest.raises(hub.HubError, match=r"the transfer broke off 2 times .* run again to resume") as error:
        hub.download(url)
    assert url in one_line(error.value)
    part = hub.cached_file(url).with_name(hub.cached_file(url).name + ".part")
    arrived = part.read_bytes()
    assert 0 < len(arrived) <= 200_000 and WEIGHTS_BYTES.startswith(arrived) and not hub.cached_file(url).exists()


def test_a_damaged_cached_file_is_detected_and_fetched_again(server, capsys):
    url, path = server.url("/model/lm_weights.hdf5"), "/model/lm_weights.hdf5"
    cached = hub.download(url)
    damaged = bytearray(WEIGHTS_BYTES)
    damaged[len(damaged) // 2] ^= 0xFF
    cached.write_bytes(bytes(damaged))  # the same size, another byte
    assert hub.download(url).read_bytes() == WEIGHTS_BYTES
    assert "is damaged (its SHA-256 is" in capsys.readouterr().err
    cached.write_bytes(WEIGHTS_BYTES[:-10])  # truncated
    assert hub.download(url).read_bytes() == WEIGHTS_BYTES
    assert f"{len(WEIGHTS_BYTES) - 10:,} bytes where {len(WEIGHTS_BYTES):,} are expected" in capsys.readouterr().err
    assert len(server.gets(path)) == 3


def test_two_processes_at_once_download_one_good_file(server, tmp_path):
    """The second process waits on the first one's lock (it says so), then finds the file."""
    url, path = server.url("/model/lm_weights.hdf5"), "/model/lm_weights.hdf5"
    server.hold[path] = threading.Event()
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           hub.CACHE_ENV: str(tmp_path / "cache")}
    code = "import sys; from torch_elmo import hub; print(hub.download(sys.argv[1]))"
    start = lambda: subprocess.Popen([sys.executable, "-c", code, url], env=env, text=True,  # noqa: E731
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    with start() as first:
        assert server.started.wait(60), "the first process never asked for the file"
        with start() as second:
            lines: queue.Queue = queue.Queue()
            threading.Thread(target=lambda: [lines.put(line) for line in second.stderr], daemon=True).start()
            try:
                assert "waiting for another process to finish downloading " + url in lines.get(timeout=60)
            finally:
                server.hold[path].set()
            out_first, err_first = first.communicate(timeout=60)
            out_second = second.stdout.read()
            assert second.wait(60) == 0 and first.returncode == 0, err_first
    assert out_first == out_second and Path(out_first.strip()).read_bytes() == WEIGHTS_BYTES
    assert server.gets(path) == [None]


# --------------------------------------------------------------------------------------------
# Offline, and servers that fail


def test_offline_an_empty_cache_is_a_one_line_error_and_a_filled_one_works(server, expected, monkeypatch, tmp_path,
                                                                           capsys):
    options_url, weights_url = server.url("/model/options.json"), server.url("/model/lm_weights.hdf5")
    monkeypatch.setenv(hub.OFFLINE_ENV, "1")
    with pytest.raises(hub.HubError) as error:
        ElmoEmbedder(options_url, weights_url)
    message = one_line(error.value)
    assert options_url in message and str(hub.cached_file(options_url)) in message and hub.OFFLINE_ENV in message
    assert "copy it to" in message and server.requests == []
    src = tmp_path / "in.txt"
    src.write_text("a b\n")
    assert main(["embed", str(src), str(tmp_path / "out.hdf5"), "--model", server.url("/model.zip")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "TORCH_ELMO_OFFLINE is set" in err and "Traceback" not in err
    # files placed by hand where the message says: used as they are, recorded, never fetched
    for url, data in ((options_url, OPTIONS_BYTES), (weights_url, WEIGHTS_BYTES)):
        hub.cached_file(url).parent.mkdir(parents=True, exist_ok=True)
        hub.cached_file(url).write_bytes(data)
    np.testing.assert_array_equal(embedding(ElmoEmbedder(options_url, weights_url)), expected)
    record = hub.cached_file(weights_url).with_name(hub.cached_file(weights_url).name + ".json")
    assert json.loads(record.read_text())["sha256"] == hashlib.sha256(WEIGHTS_BYTES).hexdigest()
    hub.cached_file(weights_url).write_bytes(WEIGHTS_BYTES[:-1])  # damaged while offline: an error, not a fetch
    with pytest.raises(hub.HubError, match="is damaged .* and TORCH_ELMO_OFFLINE is set; delete it"):
        hub.download(weights_url)
    assert server.requests == []


def test_a_404_a_refused_connection_and_a_silent_server_are_one_line_errors(server, monkeypatch, tmp_path, capsys):
    missing = server.url("/models/missing_weights.hdf5")
    with pytest.raises(hub.HubError, match=r"HTTP 404 Not Found; check the URL") as error:
        hub.download(missing)
    assert missing in one_line(error.value)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        refused = f"http://127.0.0.1:{s.getsockname()[1]}/weights.hdf5"
    with pytest.raises(hub.HubError, match=r"cannot connect \(Connection refused\)") as error:
        hub.download(refused)
    assert refused in one_line(error.value) and str(hub.cached_file(refused)) in str(error.value)
    monkeypatch.setattr(hub, "READ_TIMEOUT", 0.3)
    with socket.socket() as silent:  # accepts connections (the kernel does), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        quiet = f"http://127.0.0.1:{silent.getsockname()[1]}/weights.hdf5"
        with pytest.raises(hub.HubError, match=r"no answer within 0.3 s") as error:
            hub.download(quiet)
    assert quiet in one_line(error.value)
    with pytest.raises(hub.HubError, match="a URL alone must be a .zip or .tar.gz model archive"):
        hub.resolve_model(server.url("/model/options.json"))
    src = tmp_path / "in.txt"
    src.write_text("a b\n")
    assert main(["embed", str(src), str(tmp_path / "out.hdf5"), "--model", server.url("/none.zip")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "HTTP 404" in err and server.url("/none.zip") in err


# --------------------------------------------------------------------------------------------
# The command line


def test_elmo_embed_model_url_end_to_end(server, tmp_path, capsys):
    src = tmp_path / "in.txt"
    src.write_text("The bank of the river .\nI went to the bank\n")
    ours, reference = tmp_path / "ours.hdf5", tmp_path / "reference.hdf5"
    assert main(["embed", str(src), str(ours), "--model", server.url("/model.zip"), "--quiet"]) == 0
    assert main(["embed", str(src), str(reference), "--options", str(OPTIONS), "--weights", str(WEIGHTS),
                 "--quiet"]) == 0
    with h5py.File(ours, "r") as a, h5py.File(reference, "r") as b:
        for key in ("0", "1"):
            np.testing.assert_array_equal(a[key][...], b[key][...])
    tokens = tmp_path / "tokens.hdf5"
    assert main(["dump-token-embeddings", str(MODEL / "vocab_test.txt"), str(tokens), "--options",
                 server.url("/model/options.json"), "--weights", server.url("/model/lm_weights.hdf5")]) == 0
    assert main(["info", server.url("/model.tar.gz")]) == 0
    assert "check:     ok" in capsys.readouterr().out
    assert main(["embed", str(src), str(ours), "--model", "x", "--options", str(OPTIONS)]) == 2
    assert "--model given with --options/--weights" in capsys.readouterr().err
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(hub.models_table()) and f"cache: {hub.cache_dir()}" in out
    assert len(server.gets("/model.zip")) == 1 and len(server.gets("/model.tar.gz")) == 1
