"""R's lazy-load databases (`data/Rdata.rdx` + `Rdata.rdb`, how an installed R package keeps its
data sets), read with PyPI's `rdata` (which reads R's serialization format, not this container).

The `.rdx` index is a gzip-compressed serialized list whose `variables` entry maps each object's
name to (offset, length) in the `.rdb`; there each object is a 4-byte big-endian uncompressed
length followed by the zlib-compressed serialized object.
"""

from __future__ import annotations

import gzip
import struct
import warnings
import zlib
from pathlib import Path


class RDataError(ValueError):
    pass


def _rdata():
    try:
        import rdata
    except ImportError:
        raise ImportError("reading R data needs rdata: pip install -e '.[recipe]'") from None
    return rdata


def _unserialize(raw: bytes):
    rdata = _rdata()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Unknown file type: assumed RDS": a bare serialization is what we give it
        return rdata.conversion.convert(rdata.parser.parse_data(raw))


def index(data_dir: str | Path) -> dict[str, tuple[int, int]]:
    """The objects of data_dir/Rdata.rdx: name -> (offset, length) in Rdata.rdb."""
    path = Path(data_dir) / "Rdata.rdx"
    try:
        raw = gzip.decompress(path.read_bytes())
    except FileNotFoundError:
        raise RDataError(f"{path}: no such file (is this an installed R package's data/ folder?)") from None
    except (OSError, EOFError) as e:
        raise RDataError(f"{path}: not a gzip-compressed R lazy-load index ({e})") from None
    variables = _unserialize(raw)["variables"]
    return {str(name): (int(v[0]), int(v[1])) for name, v in variables.items()}


def read_object(data_dir: str | Path, name: str):
    """One object of the database, converted by rdata (a character vector comes as a numpy array of str)."""
    objects = index(data_dir)
    if name not in objects:
        raise RDataError(f"{data_dir}/Rdata.rdx: no object {name!r}; it has {sorted(objects)}")
    offset, length = objects[name]
    with open(Path(data_dir) / "Rdata.rdb", "rb") as f:
        f.seek(offset)
        blob = f.read(length)
    if len(blob) != length or length < 4:
        raise RDataError(f"{data_dir}/Rdata.rdb: object {name!r} is cut short (wanted {length} bytes at {offset})")
    (size,) = struct.unpack(">I", blob[:4])
    raw = zlib.decompress(blob[4:])
    if len(raw) != size:
        raise RDataError(f"{data_dir}/Rdata.rdb: object {name!r} unpacks to {len(raw)} bytes, not {size}")
    return _unserialize(raw)


def character_vector(data_dir: str | Path, name: str) -> list[str]:
    """A character vector object as a list of Python strings (NA as the empty string)."""
    value = read_object(data_dir, name)
    try:
        return ["" if v is None else str(v) for v in value]
    except TypeError:
        raise RDataError(f"{data_dir}: object {name!r} is not a character vector ({type(value).__name__})") from None
