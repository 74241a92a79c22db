"""A reader of SWORD `zText` Bible modules (the format of Debian's `sword-text-*` packages), enough
to take every verse's text in order; no versification (book / chapter / verse names) is needed for
a corpus.

A testament `ot` or `nt` is three files:
    {ot,nt}.bzs  one 12-byte entry per compressed block: offset, compressed size, size (uint32 LE)
    {ot,nt}.bzz  the blocks, each zlib-compressed (the module's CompressType=ZIP)
    {ot,nt}.bzv  one 10-byte entry per index slot (module heading, book and chapter headings, then
                 each verse, in the module's versification order): block number, offset in the
                 uncompressed block (uint32 LE), size (uint16 LE); size 0 means no text
The slot text is the module's markup (OSIS for the World English Bible), UTF-8.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

TESTAMENTS = ("ot", "nt")
BLOCK_ENTRY = struct.Struct("<III")
VERSE_ENTRY = struct.Struct("<IIH")


class SwordError(ValueError):
    pass


def read_conf(path: str | Path) -> dict[str, str]:
    """A module's mods.d/*.conf: `Key=Value` lines (the first value of a repeated key), plus
    `name` (the [section])."""
    conf: dict[str, str] = {}
    for line in Path(path).read_text(encoding="utf-8", errors="replace").splitlines():
        line = line.strip()
        if line.startswith("[") and line.endswith("]"):
            conf.setdefault("name", line[1:-1])
        elif "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            conf.setdefault(key.strip(), value.strip())
    return conf


def entries(module_dir: str | Path, testament: str) -> Iterator[tuple[int, str]]:
    """(slot index, markup) of every slot with text, in index order, of one testament."""
    module_dir = Path(module_dir)
    paths = [module_dir / f"{testament}.{ext}" for ext in ("bzs", "bzv", "bzz")]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise SwordError(f"{module_dir}: no {', '.join(missing)} (is this a zText module folder?)")
    bzs, bzv, bzz = (p.read_bytes() for p in paths)
    if len(bzs) % BLOCK_ENTRY.size or len(bzv) % VERSE_ENTRY.size:
        raise SwordError(f"{module_dir}/{testament}: index sizes {len(bzs)}, {len(bzv)} are not whole entries")
    blocks = [BLOCK_ENTRY.unpack_from(bzs, i) for i in range(0, len(bzs), BLOCK_ENTRY.size)]
    current, data = -1, b""
    for slot, at in enumerate(range(0, len(bzv), VERSE_ENTRY.size)):
        block, start, size = VERSE_ENTRY.unpack_from(bzv, at)
        if size == 0:
            continue
        if block >= len(blocks):
            raise SwordError(f"{module_dir}/{testament}.bzv: slot {slot} names block {block} of {len(blocks)}")
        if block != current:  # the slots of a block are consecutive: keep one block unpacked
            offset, compressed, expected = blocks[block]
            try:
                data = zlib.decompress(bzz[offset : offset + compressed])
            except zlib.error as e:
                raise SwordError(f"{module_dir}/{testament}.bzz: block {block} does not unpack ({e})") from None
            if len(data) != expected:
                raise SwordError(f"{module_dir}/{testament}.bzz: block {block} is {len(data)} bytes, not {expected}")
            current = block
        if start + size > len(data):
            raise SwordError(f"{module_dir}/{testament}.bzv: slot {slot} runs past the end of block {block}")
        yield slot, data[start : start + size].decode("utf-8", errors="replace")


def module_entries(module_dir: str | Path) -> Iterator[str]:
    """The markup of every slot with text, Old Testament first (a testament that the module does
    not have is skipped)."""
    module_dir = Path(module_dir)
    present = [t for t in TESTAMENTS if (module_dir / f"{t}.bzv").is_file()]
    if not present:
        raise SwordError(f"{module_dir}: neither ot.bzv nor nt.bzv (is this a zText module folder?)")
    for testament in present:
        for _, markup in entries(module_dir, testament):
            yield markup
