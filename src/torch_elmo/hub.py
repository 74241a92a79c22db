"""Published models by name, URL or archive: downloaded once into a cache, verified, offline-safe.

`resolve_model(spec)` turns what a user names into local files, (options.json, weights.hdf5,
vocab.txt or None):

- a name from the catalogue below (`elmo models` prints it): its two files are downloaded;
- a URL or a local path of a .zip / .tar.gz archive holding options.json and a weight file in
  bilm-tf's layout (as the NLPL repository serves them: options.json + model.hdf5, sometimes a
  vocab.txt): downloaded, then extracted once into the cache;
- a local folder holding options.json and weights.hdf5 (or model.hdf5, lm_weights.hdf5);
- two options / weights paths or URLs (`resolve_model(options, weights)`): each URL is downloaded.

The cache (`cache_dir()`: the argument, else $TORCH_ELMO_CACHE, else $XDG_CACHE_HOME/torch-elmo,
else ~/.cache/torch-elmo) keeps each downloaded file under a name made of a hash of its URL and
the URL's last path component, in `downloads/`, with `NAME.json` beside it recording the URL,
the size and the SHA-256 measured at download; archives are extracted into `extracted/`. A file
found there (complete and matching its record) is used without touching the network; one that
does not match (truncated, altered) is fetched again. A download goes to NAME.part under a file
lock (so that processes fetching the same file at once, e.g. torchrun's ranks, wait for one
another and download it once), resumes an interrupted transfer where the server accepts byte
ranges, checks the size and the checksum, and is renamed to NAME when complete.

$TORCH_ELMO_OFFLINE=1 never touches the network: a file missing from the cache is then an error
naming the URL, the cache path and how to place the file there by hand. Every problem is a
`HubError` (an ElmoError and an OSError) whose message is one line: what, the problem, the fix.

The transfer is `requests` (timeouts, proxies from the environment, TLS); the lock `filelock`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import NamedTuple
from urllib.parse import unquote, urlsplit

import requests
from filelock import FileLock, Timeout
from tqdm.auto import tqdm

from . import default
from .efml import is_efml_model
from .errors import ElmoError, UsageError
from .files import make_readable

PathLike = str | os.PathLike

CACHE_ENV = "TORCH_ELMO_CACHE"
OFFLINE_ENV = "TORCH_ELMO_OFFLINE"
CONNECT_TIMEOUT = 10.0  # seconds to connect (so that no network at all is an error, not a hang)
READ_TIMEOUT = 60.0  # seconds without a byte before a transfer counts as broken
ATTEMPTS = 4  # a transfer broken off is resumed (or restarted) this many times in all
RETRY_WAIT = 1.0  # seconds before the next attempt
CHUNK = 1 << 16  # bytes read at a time: a transfer broken off loses at most the chunk it was in
LOCK_NOTICE_AFTER = 0.2  # seconds waiting for another process's lock before saying so
ARCHIVE_SUFFIXES = (".zip", ".tar.gz", ".tgz", ".tar", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
OPTIONS_NAMES = ("options.json",)
WEIGHTS_NAMES = ("weights.hdf5", "model.hdf5", "lm_weights.hdf5")
VOCAB_NAMES = ("vocab.txt",)


class HubError(ElmoError, OSError):
    """A model that cannot be found, downloaded, verified or extracted; the message is one line
    naming the URL or path, the problem and the fix."""


# --------------------------------------------------------------------------------------------
# The catalogue


@dataclass(frozen=True)
class PublishedModel:
    """A published biLM in bilm-tf's format, as its publisher describes it. A fact not found
    in the publisher's pages (or, for sizes, in a log of the server's answer) is None."""

    name: str  # the short name taken by resolve_model, --model, from_pretrained
    title: str  # the publisher's name for it
    options_url: str
    weights_url: str
    output_dim: int | None  # the size of each ELMo vector (2 x the LSTM projection)
    parameters_m: float | None  # millions, as the publisher's table gives them
    training_data: str | None
    licence: str | None
    source: str  # where the facts above were read
    options_size: int | None = None  # bytes
    weights_size: int | None = None
    options_sha256: str | None = None
    weights_sha256: str | None = None


_S3 = "https://s3-us-west-2.amazonaws.com/allennlp/models/elmo"
_ALLENNLP_PAGE = "https://allennlp.org/elmo"
_ALLENNLP_LICENCE = "none imposed (AllenNLP, allenai/allennlp#1462)"
_1B_WORDS = "1 Billion Word Benchmark (about 800M tokens of WMT 2011 news crawl)"

# One entry a published model, each a fact found on its publisher's page: the entries share their
# shape on purpose (the `duplicates` tool pairs them), as rows of a table do.
CATALOGUE: tuple[PublishedModel, ...] = (
    PublishedModel(
        "small", "Small (2x1024_128_2048cnn_1xhighway)",
        f"{_S3}/2x1024_128_2048cnn_1xhighway/elmo_2x1024_128_2048cnn_1xhighway_options.json",
        f"{_S3}/2x1024_128_2048cnn_1xhighway/elmo_2x1024_128_2048cnn_1xhighway_weights.hdf5",
        output_dim=256, parameters_m=13.6, training_data=_1B_WORDS, licence=_ALLENNLP_LICENCE,
        source=_ALLENNLP_PAGE),
    PublishedModel(
        "medium", "Medium (2x2048_256_2048cnn_1xhighway)",
        f"{_S3}/2x2048_256_2048cnn_1xhighway/elmo_2x2048_256_2048cnn_1xhighway_options.json",
        f"{_S3}/2x2048_256_2048cnn_1xhighway/elmo_2x2048_256_2048cnn_1xhighway_weights.hdf5",
        output_dim=512, parameters_m=28.0, training_data=_1B_WORDS, licence=_ALLENNLP_LICENCE,
        source=_ALLENNLP_PAGE),
    PublishedModel(
        "original", "Original (2x4096_512_2048cnn_2xhighway)",
        f"{_S3}/2x4096_512_2048cnn_2xhighway/elmo_2x4096_512_2048cnn_2xhighway_options.json",
        f"{_S3}/2x4096_512_2048cnn_2xhighway/elmo_2x4096_512_2048cnn_2xhighway_weights.hdf5",
        output_dim=1024, parameters_m=93.6, training_data=_1B_WORDS, licence=_ALLENNLP_LICENCE,
        source=_ALLENNLP_PAGE + "; sizes: as AllenNLP's downloader reported them in public logs",
        options_size=336, weights_size=374_434_792),
    PublishedModel(
        "original-5.5b", "Original (5.5B) (2x4096_512_2048cnn_2xhighway_5.5B)",
        f"{_S3}/2x4096_512_2048cnn_2xhighway_5.5B/elmo_2x4096_512_2048cnn_2xhighway_5.5B_options.json",
        f"{_S3}/2x4096_512_2048cnn_2xhighway_5.5B/elmo_2x4096_512_2048cnn_2xhighway_5.5B_weights.hdf5",
        output_dim=1024, parameters_m=93.6,
        training_data="5.5B tokens: Wikipedia (1.9B) and WMT 2008-2012 news crawl (3.6B)",
        licence=_ALLENNLP_LICENCE, source=_ALLENNLP_PAGE),
    PublishedModel(
        "pubmed", "PubMed (2x4096_512_2048cnn_2xhighway), contributed by Matthew Peters",
        f"{_S3}/contributed/pubmed/elmo_2x4096_512_2048cnn_2xhighway_options.json",
        f"{_S3}/contributed/pubmed/elmo_2x4096_512_2048cnn_2xhighway_weights_PubMed_only.hdf5",
        output_dim=1024, parameters_m=None, training_data="PubMed", licence=None,
        source=_ALLENNLP_PAGE + " (contributed models)"),
    PublishedModel(
        "pt-wikipedia", "Portuguese (Wikipedia corpus), contributed by the Federal University of Goiás",
        f"{_S3}/contributed/pt/wikipedia/options.json",
        f"{_S3}/contributed/pt/wikipedia/elmo_pt_weights.hdf5",
        output_dim=None, parameters_m=None, training_data="Portuguese Wikipedia", licence=None,
        source=_ALLENNLP_PAGE + " (contributed models)"),
    PublishedModel(
        "pt-brwac", "Portuguese (brWaC corpus), contributed by the Federal University of Goiás",
        f"{_S3}/contributed/pt/brwac/options.json",
        f"{_S3}/contributed/pt/brwac/elmo_pt_weights_dgx1.hdf5",
        output_dim=None, parameters_m=None, training_data="brWaC corpus", licence=None,
        source=_ALLENNLP_PAGE + " (contributed models)"),
    PublishedModel(
        "ja", "Japanese, contributed by ExaWizards Inc.",
        "https://exawizardsallenlp.blob.core.windows.net/data/options.json",
        "https://exawizardsallenlp.blob.core.windows.net/data/weights.hdf5",
        output_dim=None, parameters_m=None, training_data=None, licence=None,
        source=_ALLENNLP_PAGE + " (contributed models)"),
    PublishedModel(
        "de", "German, contributed by Philip May & T-Systems on site services",
        "https://github.com/t-systems-on-site-services-gmbh/german-elmo-model/releases/download/files_1/options.json",
        "https://github.com/t-systems-on-site-services-gmbh/german-elmo-model/releases/download/files_1/weights.hdf5",
        output_dim=None, parameters_m=None,
        training_data="German Wikipedia articles and talk pages (962,868,231 training tokens)",
        licence="BSD-2-Clause (the repository's LICENSE)",
        source="https://github.com/t-systems-on-site-services-gmbh/german-elmo-model (README, issue #2)"),
    PublishedModel(
        "eu", "Basque, contributed by Stefan Schweter",
        "https://schweter.eu/cloud/eu-elmo/options.json",
        "https://schweter.eu/cloud/eu-elmo/weights.hdf5",
        output_dim=None, parameters_m=None,
        training_data="Basque Wikipedia, OPUS and Leipzig Corpora Collection texts (72,683,662 tokens tokenized)",
        licence=None, source="https://github.com/stefan-it/plur (README)"),
)


def published_model(name: str) -> PublishedModel:
    """The catalogue entry of a name (case-insensitive); HubError listing the names otherwise."""
    for model in CATALOGUE:
        if model.name == name.lower():
            return model
    raise HubError(f"{name}: no published model of that name; the names are "
                   f"{', '.join(m.name for m in CATALOGUE)} (`elmo models` describes them)")


def _size_text(n: int | None) -> str:
    if n is None:
        return "?"
    return f"{n / 2**20:,.1f} MiB" if n >= 2**20 else f"{n / 2**10:.1f} KiB"


def models_table() -> str:
    """The catalogue as a Markdown table and a list of its files' URLs: what `elmo models`
    prints and the README shows ("?" where the publisher gives no figure)."""
    rows = ["| name | model | output dim | parameters | weights | training data | licence |",
            "|---|---|---|---|---|---|---|"]
    for m in CATALOGUE:
        cells = [f"`{m.name}`", m.title, str(m.output_dim or "?"),
                 f"{m.parameters_m}M" if m.parameters_m is not None else "?", _size_text(m.weights_size),
                 m.training_data or "?", m.licence or "not stated"]
        rows.append("| " + " | ".join(cells) + " |")
    rows += ["", "Files (options, weights) and where the facts above come from:", ""]
    rows += [f"- `{m.name}`: {m.options_url} {m.weights_url} (source: {m.source})" for m in CATALOGUE]
    return "\n".join(rows) + "\n"


# --------------------------------------------------------------------------------------------
# The cache


def cache_dir(path: PathLike | None = None) -> Path:
    """Where downloads are kept: `path`, else $TORCH_ELMO_CACHE, else $XDG_CACHE_HOME/torch-elmo,
    else ~/.cache/torch-elmo."""
    if path is not None:
        return Path(path).expanduser()
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "torch-elmo"


def offline() -> bool:
    """Whether $TORCH_ELMO_OFFLINE forbids the network (1, true, yes, on)."""
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def is_url(spec) -> bool:
    return isinstance(spec, str) and re.match(r"(?i)https?://", spec) is not None


def _url_basename(url: str) -> str:
    name = unquote(urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1])
    name = re.sub(r"[^A-Za-z0-9._+-]", "_", name).lstrip(".")
    return name[-100:] or "file"


def cached_file(url: str, cache: PathLike | None = None) -> Path:
    """The path a URL is (or will be) downloaded to: downloads/HASH-NAME, HASH the first 16 hex
    digits of the URL's SHA-256, NAME its last path component."""
    digest = hashlib.sha256(url.encode("utf-8")).hexdigest()[:16]
    return cache_dir(cache) / "downloads" / f"{digest}-{_url_basename(url)}"


def _write_json(path: Path, data: dict) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1)
        make_readable(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        with _suppress_os():
            os.unlink(tmp)
        raise


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


@contextmanager
def _suppress_os() -> Iterator[None]:
    try:
        yield
    except OSError:
        pass


def sha256_file(path: PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    return h.hexdigest()


def _record_path(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def _check(path: Path, size: int | None, sha256: str | None) -> tuple[str, str | None, str | None]:
    """(state, sha256 of the file or None, why) of a cached file: "missing", "ok", "unrecorded"
    (present, matching what is expected, but never recorded: placed by hand) or "corrupt"."""
    try:
        actual_size = path.stat().st_size
    except FileNotFoundError:
        return "missing", None, None
    record = _read_json(_record_path(path))
    expected_size = size if size is not None else (record or {}).get("size")
    if expected_size is not None and actual_size != expected_size:
        return "corrupt", None, f"{actual_size:,} bytes where {expected_size:,} are expected"
    digest = sha256_file(path)
    for expected, what in ((sha256, "published"), ((record or {}).get("sha256"), "recorded when it was cached")):
        if expected and digest != expected.lower():
            return "corrupt", digest, f"its SHA-256 is {digest}, not the {expected} {what}"
    return ("ok" if record else "unrecorded"), digest, None


@contextmanager
def _locked(path: Path, what: str) -> Iterator[None]:
    """An exclusive lock on PATH.lock, saying so when another process holds it."""

    lock = FileLock(str(path) + ".lock")
    try:
        lock.acquire(timeout=LOCK_NOTICE_AFTER)
    except Timeout:
        _note(f"waiting for another process to finish {what} (lock {path}.lock)")
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def _note(message: str) -> None:
    print(f"torch-elmo: {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# Downloads


def _by_hand(url: str, path: Path) -> str:
    return f"download it where there is a network and copy it to {path}"


def download(url: str, *, cache: PathLike | None = None, size: int | None = None, sha256: str | None = None,
             progress: bool | None = None) -> Path:
    """The local copy of a URL, downloaded into the cache on first use (see the module's
    docstring): complete, of `size` bytes and SHA-256 `sha256` where given, and matching what
    was recorded when it was downloaded. `progress`: a tqdm bar on stderr (None: when stderr
    is a terminal)."""
    path = cached_file(url, cache)
    state, digest, why = _check(path, size, sha256)
    if state == "ok":
        return path
    if state == "missing" and offline():
        raise HubError(f"{url}: not in the cache ({path}) and {OFFLINE_ENV} is set; {_by_hand(url, path)}, "
                       f"or unset {OFFLINE_ENV}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path, f"downloading {url}"):
        state, digest, why = _check(path, size, sha256)  # another process may have fetched it meanwhile
        if state == "ok":
            return path
        if state == "unrecorded":  # placed by hand: record what it is, so that a change is seen
            _write_json(_record_path(path), {"url": url, "size": path.stat().st_size, "sha256": digest})
            return path
        if state == "corrupt":
            if offline():
                raise HubError(f"{url}: the cached {path} is damaged ({why}) and {OFFLINE_ENV} is set; "
                               f"delete it and {_by_hand(url, path)}, or unset {OFFLINE_ENV}")
            _note(f"{path} is damaged ({why}): downloading it again")
            for p in (path, _record_path(path)):
                with _suppress_os():
                    p.unlink()
        if offline():
            raise HubError(f"{url}: not in the cache ({path}) and {OFFLINE_ENV} is set; {_by_hand(url, path)}, "
                           f"or unset {OFFLINE_ENV}")
        _fetch(url, path, size, sha256, progress)
    return path


class _Broken(Exception):
    """A transfer broken off after it started: resume it."""


def _fetch(url: str, path: Path, size: int | None, sha256: str | None, progress: bool | None) -> None:
    """Downloads URL into PATH.part (resuming what an earlier attempt left), checks it, records
    it in PATH.json and renames it to PATH. Called under the lock."""

    part = path.with_name(path.name + ".part")
    part_record = path.with_name(path.name + ".part.json")
    if (_read_json(part_record) or {}).get("url") != url:
        with _suppress_os():
            part.unlink()
    restarted = False
    with requests.Session() as session:
        for attempt in range(1, ATTEMPTS + 1):
            try:
                total, validator = _transfer(session, url, part, part_record, path, progress)
            except _Broken as e:
                if attempt == ATTEMPTS:
                    raise HubError(f"{url}: the transfer broke off {ATTEMPTS} times ({e}); what arrived is kept "
                                   f"in {part}: run again to resume, or {_by_hand(url, path)}") from None
                time.sleep(RETRY_WAIT)
                continue
            got = part.stat().st_size
            problem = None
            if total is not None and got != total:
                problem = f"{got:,} bytes arrived where the server announced {total:,}"
            elif size is not None and got != size:
                problem = f"the server sent {got:,} bytes where the catalogue expects {size:,}"
            digest = sha256_file(part)
            if problem is None and sha256 and digest != sha256.lower():
                problem = f"its SHA-256 is {digest}, not the published {sha256}"
            if problem is None:
                break
            with _suppress_os():
                part.unlink()
            if restarted or attempt == ATTEMPTS:
                raise HubError(f"{url}: the download does not check out ({problem}); try again later, or "
                               f"{_by_hand(url, path)}")
            restarted = True  # a resumed file may hold a stale beginning: start over once
    record = {"url": url, "size": got, "sha256": digest, **validator}
    make_readable(part)
    _write_json(_record_path(path), record)  # the record first: a file without one is checked anew
    os.replace(part, path)
    with _suppress_os():
        part_record.unlink()


def _transfer(session, url: str, part: Path, part_record: Path, path: Path,
              progress: bool | None) -> tuple[int | None, dict]:
    """One GET appending to PART from where it ends (a Range request) or rewriting it (when
    the server sends the whole file). Returns (the file's total size or None, its validators)."""


    have = part.stat().st_size if part.exists() else 0
    previous = _read_json(part_record) or {}
    headers = {"User-Agent": f"torch-elmo/{_version()}", "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
        if previous.get("etag") or previous.get("last_modified"):
            headers["If-Range"] = previous.get("etag") or previous["last_modified"]
    try:
        response = session.get(url, headers=headers, stream=True, timeout=(CONNECT_TIMEOUT, READ_TIMEOUT))
    except requests.exceptions.Timeout as e:
        seconds = CONNECT_TIMEOUT if isinstance(e, requests.exceptions.ConnectTimeout) else READ_TIMEOUT
        raise HubError(f"{url}: no answer within {seconds:g} s; check the network or proxy, or "
                       f"{_by_hand(url, path)}") from None
    except requests.exceptions.RequestException as e:
        raise HubError(f"{url}: cannot connect ({_reason(e)}); check the URL and the network, or "
                       f"{_by_hand(url, path)}") from None
    with response:
        if response.status_code == 416 and have:  # the part is all there is, or stale: start over
            with _suppress_os():
                part.unlink()
            raise _Broken("the server refused to resume")
        if response.status_code not in (200, 206):
            raise HubError(f"{url}: HTTP {response.status_code} {response.reason or ''}".rstrip()
                           + "; check the URL (`elmo models` lists the published ones)"
                           + (f", or {_by_hand(url, path)}" if response.status_code >= 500 else ""))
        validator = {k: v for k, v in (("etag", response.headers.get("ETag")),
                                       ("last_modified", response.headers.get("Last-Modified"))) if v}
        total = None
        if response.status_code == 206:
            match = re.match(r"bytes (\d+)-\d+/(\d+|\*)", response.headers.get("Content-Range", ""))
            if not match or int(match.group(1)) != have:
                with _suppress_os():
                    part.unlink()
                raise _Broken("the server resumed at another byte")
            total = None if match.group(2) == "*" else int(match.group(2))
            mode = "ab"
        else:
            have, mode = 0, "wb"
            if response.headers.get("Content-Length", "").isdigit():
                total = int(response.headers["Content-Length"])
        _write_json(part_record, {"url": url, **validator})
        bar = tqdm(total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr,
                   desc=path.name.split("-", 1)[-1], disable=None if progress is None else not progress,
                   dynamic_ncols=True)
        try:
            with open(part, mode) as f:
                for block in response.iter_content(CHUNK):
                    f.write(block)
                    bar.update(len(block))
        except (requests.exceptions.RequestException, ConnectionError, TimeoutError) as e:  # before OSError
            raise _Broken(_reason(e)) from None
        except OSError as e:
            raise HubError(f"{part}: cannot be written ({e.strerror or e}); free space in the cache or set "
                           f"{CACHE_ENV} to another folder") from None
        finally:
            bar.close()
        if total is not None and part.stat().st_size < total:
            raise _Broken(f"{part.stat().st_size:,} of {total:,} bytes arrived")
    return total, validator


def _reason(error: BaseException) -> str:
    """The innermost cause of a requests error, in a few words (e.g. "Connection refused")."""
    seen, todo = set(), [error]
    best = None
    while todo:
        e = todo.pop(0)
        if id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, OSError) and e.strerror:
            return e.strerror
        text = str(e)
        match = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", text)
        if match:
            best = best or match.group(1).strip()
        todo += [a for a in getattr(e, "args", ()) if isinstance(a, BaseException)]
        todo += [c for c in (getattr(e, "reason", None), e.__cause__, e.__context__) if isinstance(c, BaseException)]
    if best:
        return best
    text = " ".join(str(error).split())
    return (text[:160] + "...") if len(text) > 160 else (text or type(error).__name__)


# --------------------------------------------------------------------------------------------
# Archives


def is_archive(name: PathLike) -> bool:
    name = urlsplit(name).path if is_url(name) else str(name)
    return name.lower().endswith(ARCHIVE_SUFFIXES)


def _member_path(dest: Path, name: str, archive: Path) -> Path | None:
    """Where an archive member goes under DEST; HubError for a name that would leave it."""
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
    if name.startswith(("/", "\\")) or ".." in parts or (parts and re.match(r"^[A-Za-z]:", parts[0])):
        raise HubError(f"{archive}: member {name!r} would be written outside the extraction folder; "
                       "refusing to extract this archive (get the model files from a trusted source)")
    return dest.joinpath(*parts) if parts else None


def _extract(archive: Path, dest: Path) -> None:
    """Regular files and folders only, each inside DEST, written with the umask's modes."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            for info in z.infolist():
                target = _member_path(dest, info.filename, archive)
                mode = info.external_attr >> 16
                if target is None:
                    continue
                if stat.S_ISLNK(mode):
                    raise HubError(f"{archive}: member {info.filename!r} is a symbolic link; refusing to "
                                   "extract links (repack the archive with plain files)")
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with z.open(info) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
        return
    try:
        tar = tarfile.open(archive, "r:*")
    except (tarfile.TarError, OSError) as e:
        raise HubError(f"{archive}: not a .zip or .tar(.gz) archive ({e}); give a model archive, a model "
                       "folder or the options and weights files") from None
    with tar:
        for member in tar:
            target = _member_path(dest, member.name, archive)
            if target is None:
                continue
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True)
            elif member.isfile():
                target.parent.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(member) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
            else:
                raise HubError(f"{archive}: member {member.name!r} is a link or a special file; refusing to "
                               "extract it (repack the archive with plain files)")


def extract_archive(archive: PathLike, *, cache: PathLike | None = None, sha256: str | None = None) -> Path:
    """The folder an archive is extracted into, once: extracted/SHA-NAME in the cache (SHA the
    first 16 hex digits of the archive's SHA-256, so that a changed archive is extracted anew)."""
    archive = Path(archive)
    if not archive.is_file():
        raise HubError(f"{archive}: no such archive; give the path or URL of a .zip or .tar.gz model archive")
    digest = (sha256 or sha256_file(archive))[:16]
    name = archive.name.split("-", 1)[1] if _is_download(archive) else archive.name
    stem = next((name[: -len(s)] for s in ARCHIVE_SUFFIXES if name.lower().endswith(s)), name)
    dest = cache_dir(cache) / "extracted" / f"{digest}-{stem or 'model'}"
    if dest.is_dir():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with _locked(dest, f"extracting {archive}"):
        if dest.is_dir():
            return dest
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
        try:
            _extract(archive, tmp)
            for folder, _dirs, _ in os.walk(tmp):
                make_readable(Path(folder), directory=True)
            os.replace(tmp, dest)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return dest


def _is_download(path: Path) -> bool:
    """Whether a path is a file of the cache's downloads/ (HASH-NAME, NAME the URL's)."""
    return re.match(r"[0-9a-f]{16}-", path.name) is not None and path.parent.name == "downloads"


# --------------------------------------------------------------------------------------------
# Resolving what a user names


class ModelFiles(NamedTuple):
    options: Path
    weights: Path
    vocab: Path | None = None


def _one(folder: Path, names: tuple[str, ...], pattern: str) -> Path | None:
    for name in names:
        if (folder / name).is_file():
            return folder / name
    found = sorted(p for p in folder.glob(pattern) if p.is_file())
    return found[0] if len(found) == 1 else None


def model_in_folder(folder: PathLike, what: str | None = None) -> ModelFiles:
    """options.json (or the one *options*.json), the weight file (weights.hdf5, model.hdf5,
    lm_weights.hdf5, else the one *weights*.hdf5 or the one *.hdf5) and vocab.txt if there is
    one, in FOLDER or in its only subfolder."""
    folder = Path(folder)
    what = what or str(folder)
    subfolders = [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")] if folder.is_dir() else []
    for candidate in [folder] + (subfolders if len(subfolders) == 1 else []):
        options = _one(candidate, OPTIONS_NAMES, "*options*.json")
        if options is None:
            continue
        weights = _one(candidate, WEIGHTS_NAMES, "*weights*.hdf5") or _one(candidate, (), "*.hdf5")
        if weights is None:
            raise HubError(f"{what}: {options.name} but no weight file (weights.hdf5 or model.hdf5) beside it; "
                           "give the weights too")
        return ModelFiles(options, weights, _one(candidate, VOCAB_NAMES, "vocab*.txt"))
    raise HubError(f"{what}: no options.json (with weights.hdf5 or model.hdf5) in it; give a model folder or "
                   "archive in bilm-tf's layout, or the options and weights files")


def names_a_model(spec) -> bool:
    """Whether SPEC alone names a whole model for resolve_model: a catalogue name, a URL, an
    archive or a folder (not a single options.json)."""
    if spec is None:
        return False
    if is_url(spec):
        return True
    path = Path(spec)
    if path.is_dir() or (path.is_file() and is_archive(path)):
        return True
    return not path.exists() and isinstance(spec, str) and any(m.name == spec.lower() for m in CATALOGUE)


def fetch(spec: PathLike, *, cache: PathLike | None = None, progress: bool | None = None) -> Path:
    """A URL's cached copy (downloaded on first use), or a local path as it is."""
    return download(spec, cache=cache, progress=progress) if is_url(spec) else Path(spec)


def resolve_model(spec: PathLike, weights: PathLike | None = None, *, cache_dir: PathLike | None = None,
                  progress: bool | None = None) -> ModelFiles:
    """Local (options, weights, vocab or None) for what a user names (see the module's
    docstring): with `weights`, SPEC is the options file; each is a path or a URL. Without,
    SPEC is a catalogue name, a model folder, or a .zip/.tar.gz archive's path or URL. A local
    path that exists wins over a catalogue name of the same spelling."""
    cache = cache_dir
    if weights is not None:
        return ModelFiles(fetch(spec, cache=cache, progress=progress), fetch(weights, cache=cache, progress=progress))
    if is_url(spec):
        if not is_archive(spec):
            raise HubError(f"{spec}: a URL alone must be a .zip or .tar.gz model archive; for an options.json "
                           "give the weights URL too (--weights, weight_file)")
        archive = download(spec, cache=cache, progress=progress)
        return model_in_folder(extract_archive(archive, cache=cache, sha256=_recorded_sha(archive)), what=spec)
    path = Path(spec)
    if path.is_dir():
        return model_in_folder(path)
    if path.is_file():
        if is_archive(path) or zipfile.is_zipfile(path) or _is_tar(path):
            return model_in_folder(extract_archive(path, cache=cache), what=str(path))
        raise HubError(f"{path}: a single file names no model unless it is a .zip or .tar.gz archive; "
                       "give the weights file too (--weights, weight_file)")
    if isinstance(spec, str) and spec and os.sep not in spec:
        try:
            model = published_model(spec)
        except HubError:
            pass
        else:
            return ModelFiles(download(model.options_url, cache=cache, size=model.options_size,
                                       sha256=model.options_sha256, progress=progress),
                              download(model.weights_url, cache=cache, size=model.weights_size,
                                       sha256=model.weights_sha256, progress=progress))
    raise HubError(f"{spec}: no such file or folder, and no published model of that name ("
                   f"{', '.join(m.name for m in CATALOGUE)}); give a model name, folder, archive or URL")


def _recorded_sha(path: Path) -> str | None:
    return (_read_json(_record_path(path)) or {}).get("sha256")


def _is_tar(path: Path) -> bool:
    try:
        return tarfile.is_tarfile(path)
    except OSError:
        return False


def _version() -> str:
    try:
        return version("torch-elmo")
    except PackageNotFoundError:  # run from a source tree without installing
        return "unknown"


def model_files(options: PathLike | None, weights: PathLike | None = None, model: PathLike | None = None, *,
                names: tuple[str, str, str] = ("options_file", "weight_file", "model"),
                cache_dir: PathLike | None = None) -> tuple[str, str | None]:
    """Local (options, weights) for every way a model is named: `model` (or `options` alone) a
    published name, folder or archive; two files, paths or URLs; nothing at all, the bundled
    default English model. An ELMoForManyLangs model (a folder or zip, efml.py) is one path:
    (it, None). `names` are what the caller calls the three (arguments or command-line
    options), for the messages."""
    if model is not None and (options is not None or weights is not None):
        raise UsageError(f"{names[2]} given with {names[0]}/{names[1]}: give either a model or its two files")
    if model is None and weights is None and options is not None and (names_a_model(options) or is_efml_model(options)):
        model = options
    if model is not None:
        local = download(model, cache=cache_dir) if is_url(model) and is_archive(model) else model
        if is_efml_model(local):
            return str(local), None
        return tuple(str(p) for p in resolve_model(model, cache_dir=cache_dir)[:2])
    if options is None and weights is None:
        return tuple(str(p) for p in default.default_model_files())
    if options is None or weights is None:
        given, missing = names[:2] if weights is None else names[1::-1]
        raise UsageError(f"{given} given without {missing}: give both (the model's options.json and its "
                         "weights.hdf5), or neither for the bundled default English model")
    return tuple(str(p) for p in resolve_model(options, weights, cache_dir=cache_dir)[:2])
