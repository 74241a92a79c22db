"""The package's errors: one base class, `ElmoError`, whose message is one line naming what is
wrong (a file, a setting, a line), the problem and the fix. The `elmo` command prints that line
for any `ElmoError`; Python callers can catch the base class or the usual built-in each
subclass also is."""

from __future__ import annotations

import errno
import os
import types
import typing


class ElmoError(Exception):
    """A user error: the message names the file, setting or line and the fix."""


class ElmoFormatError(ElmoError, ValueError):
    """A model file that cannot be read as the published format."""


class DataError(ElmoError, ValueError):
    """A corpus or vocabulary that cannot be used."""


class TrainError(ElmoError, ValueError):
    """A training setup that cannot work."""


class UsageError(ElmoError, ValueError):
    """Arguments or command-line options that cannot work together or with this machine."""


class InputTypeError(ElmoError, TypeError):
    """An argument of the wrong type (a string where a list of tokens goes, ...)."""


class MissingFile(ElmoError, FileNotFoundError):
    """A file the user named (or that a run directory should hold) is not there."""


class MissingExtra(ElmoError, ImportError):
    """An optional dependency (an extra) is not installed; the message says how to install it."""


class Fault(ElmoError, OSError):
    """The environment failed (a full disk, a permission, a damaged device), not the input;
    the message says what was kept and how to go on."""


class BadSettings(ElmoError, ValueError):
    """Settings out of their range, all of them at once: `problems` lists (name, value, expected)."""

    def __init__(self, problems: list[tuple[str, object, str]]):
        self.problems = problems
        super().__init__(format_problems(problems))


def format_problems(problems: list[tuple[str, object, str]], name=lambda n: n) -> str:
    """`NAME is VALUE, expected WHAT; ...`, each name as `name(field)` says it."""
    return "; ".join(f"{name(n)} is {v!r}, expected {expected}" for n, v, expected in problems)


class DefaultModelMissing(MissingFile):
    """The default model's files are not installed (a source checkout before `make default-model`)."""


def describe_type(hint) -> str:
    """A JSON-ish type as a message says it: `int | None` -> "an integer or null"; a tuple of
    types reads as their union."""
    if isinstance(hint, tuple):
        return " or ".join(describe_type(h) for h in hint)
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return " or ".join(describe_type(a) for a in typing.get_args(hint))
    if typing.get_origin(hint) is typing.Literal:
        return " or ".join(f'"{a}"' if isinstance(a, str) else repr(a) for a in typing.get_args(hint))
    if typing.get_origin(hint) is tuple:
        return "a list"
    if typing.get_origin(hint) is list:
        return f"a list of {describe_type(typing.get_args(hint)[0]).split(' ', 1)[-1]}s"
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string", type(None): "null",
             dict: "a JSON object", list: "a list", os.PathLike: "a path"}
    return names.get(hint, getattr(hint, "__name__", str(hint)))


def fits(value, hint) -> bool:
    """Whether a JSON-ish value fits a type annotation (int, float, bool, str, None, list[X],
    dict, Literal[...] and unions of them); an int is a float, a bool is no int."""
    args = typing.get_args(hint)
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return any(fits(value, a) for a in args)
    if typing.get_origin(hint) is typing.Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if hint is type(None):
        return value is None
    if typing.get_origin(hint) in (list, tuple):
        return isinstance(value, (list, tuple))
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, (str, os.PathLike))
    return isinstance(value, typing.get_origin(hint) or hint)


def type_problems(cls, values: dict) -> list[tuple[str, object, str]]:
    """(name, value, expected type) for each value that does not fit its dataclass field."""
    hints = typing.get_type_hints(cls)
    return [(name, value, describe_type(hints[name]))
            for name, value in values.items() if name in hints and not fits(value, hints[name])]


FAULT_ERRNOS = {errno.ENOSPC: "no space left on the device; free some space, or write elsewhere",
                errno.EDQUOT: "the disk quota is exceeded; free some space, or write elsewhere",
                errno.EACCES: "permission denied; write where you may, or change the permissions",
                errno.EPERM: "operation not permitted; write where you may, or change the permissions",
                errno.EROFS: "the file system is read-only; write elsewhere",
                errno.EIO: "an input/output error of the device; check the disk"}


def describe_os_error(e: OSError) -> tuple[bool, str]:
    """(whether it is a fault of the environment rather than of the input, one line naming the
    file, the problem and the fix). h5py's errors carry their errno only in the message."""
    code = e.errno
    if code is None:
        text = str(e)
        code = next((c for c in FAULT_ERRNOS if f"errno = {c}," in text or os.strerror(c) in text), None)
    where = f"{e.filename}: " if e.filename else ""
    if code in FAULT_ERRNOS:
        return True, f"{where}{FAULT_ERRNOS[code]}"
    what = e.strerror or str(e)
    user = isinstance(e, (FileNotFoundError, IsADirectoryError, NotADirectoryError, FileExistsError))
    return not user, f"{where}{what}"


def out_of_range(obj, names, ok, expected: str, skip: set[str] = frozenset()) -> list[tuple[str, object, str]]:
    """(name, value, expected) for each of obj's fields `names` whose value is set but not `ok`
    (fields in `skip`, already reported as mistyped, are left out)."""
    return [(name, getattr(obj, name), expected) for name in names
            if name not in skip and getattr(obj, name) is not None and not ok(getattr(obj, name))]
