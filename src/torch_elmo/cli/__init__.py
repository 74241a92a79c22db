"""The `elmo` command: embed files, train, evaluate and export biLMs, inspect model files.

Each subcommand is a typed function (embed.py, inspection.py, training.py), callable from Python
as well; its docstring is its `--help`: the text before `Arguments:` describes the command, and
each `name: text` entry under `Arguments:` documents that parameter, its default included. This
module turns the signatures into an argparse parser (`_add_command`): a parameter before `*` is a
positional argument, one after it an option `--name-with-dashes`; `bool` is a flag,
`Literal[...]` a choice, `list[str]` repeats.

Every error is one line on stderr, `elmo CMD: error: WHAT: the problem; the fix`: exit status 2
for the user's (an `ElmoError`: a missing or malformed file, bad data, an impossible setting), 1
for the environment's (a full disk, a permission) and for bugs, 130 after Ctrl-C or SIGTERM (the
shell's 128 + SIGINT, which scripts test for). `--debug` or ELMO_DEBUG=1 shows the traceback.
"""

from __future__ import annotations

import argparse
import inspect
import os
import sys
import typing
from collections.abc import Callable
from typing import Literal

from .. import __version__
from ..errors import ElmoError, Fault, describe_os_error
from .common import FAULT, INTERRUPTED, USER_ERROR
from .embed import embed, join_shards
from .inspection import dump_token_embeddings, info, models
from .training import evaluate, export, plot, resume, train, vocab

COMMANDS: list[Callable[..., int]] = [embed, join_shards, vocab, train, resume, evaluate, export, plot,
                                      dump_token_embeddings, info, models]


def parse_docstring(fn: Callable) -> tuple[str, dict[str, str]]:
    """(description, {parameter: help}) from a docstring with an `Arguments:` section."""
    doc = inspect.getdoc(fn) or ""
    description, _, arguments = doc.partition("\nArguments:\n")
    helps: dict[str, str] = {}
    name = None
    for line in arguments.splitlines():
        stripped = line.strip()
        if line.startswith("    ") and not line.startswith("     ") and ":" in stripped:
            name, _, text = stripped.partition(":")
            helps[name] = text.strip()
        elif name is not None and stripped:
            helps[name] += " " + stripped
    return description.strip(), helps


def _add_command(subparsers, fn: Callable) -> None:
    description, helps = parse_docstring(fn)
    hints = typing.get_type_hints(fn)
    parser = subparsers.add_parser(fn.__name__.replace("_", "-"), help=description.splitlines()[0].replace("%", "%%"),
                                   description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.set_defaults(_command=fn)
    for name, param in inspect.signature(fn).parameters.items():
        kind = hints[name]
        args = typing.get_args(kind)
        if type(None) in args:  # X | None
            kind = next(a for a in args if a is not type(None))
        spec: dict = {"help": helps[name].replace("%", "%%")}  # argparse formats help with %
        if typing.get_origin(kind) is Literal:
            spec["choices"] = typing.get_args(kind)
        elif typing.get_origin(kind) is list:
            spec["type"] = typing.get_args(kind)[0]
        elif kind is not bool:
            spec["type"] = kind
        if param.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD:
            if typing.get_origin(kind) is list:
                spec["nargs"] = "+"
            elif param.default is not inspect.Parameter.empty:
                spec.update(nargs="?", default=param.default)
            parser.add_argument(name, metavar=name.upper(), **spec)
            continue
        flag = "--" + name.replace("_", "-")
        if kind is bool:
            spec["action"] = "store_true"
        elif typing.get_origin(kind) is list:
            spec.update(action="append", metavar=name.upper().replace("SET", "KEY=VALUE"))
        if param.default is inspect.Parameter.empty:
            spec["required"] = True
        else:
            spec["default"] = list(param.default) if typing.get_origin(kind) is list else param.default
        parser.add_argument(flag, dest=name, **spec)


def build_parser(prog: str = "elmo") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description="ELMo from the shell: embed text files into HDF5, train and export "
                               "biLMs, inspect model files. `elmo COMMAND --help` explains each command.")
    parser.add_argument("--version", action="version", version=f"torch-elmo {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="on an error, show the Python traceback too (as ELMO_DEBUG=1 does)")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for fn in COMMANDS:
        _add_command(subparsers, fn)
    return parser


def main(argv: list[str] | None = None, prog: str = "elmo") -> int:
    """The `elmo` console script. Returns the exit status."""
    args = vars(build_parser(prog).parse_args(argv))
    command = args.pop("command")
    fn = args.pop("_command")
    debug = args.pop("debug") or os.environ.get("ELMO_DEBUG", "") not in ("", "0")
    try:
        return fn(**args)
    except KeyboardInterrupt:
        print(f"{prog} {command}: interrupted", file=sys.stderr)
        return INTERRUPTED
    except BrokenPipeError:  # `elmo info | head`: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return FAULT
    except Exception as e:
        if debug:
            raise
        status, message = _failure(e)
        notes = "; ".join(getattr(e, "__notes__", ()))  # what was kept, added on the way up
        print(f"{prog} {command}: error: {' '.join((message + ('; ' + notes if notes else '')).split())}",
              file=sys.stderr)
        return status


def _failure(e: Exception) -> tuple[int, str]:
    """The exit status and the line of an error."""
    if isinstance(e, Fault):
        return FAULT, str(e)
    if isinstance(e, ElmoError):
        return USER_ERROR, str(e)
    if isinstance(e, OSError):
        fault, message = describe_os_error(e)
        return (FAULT if fault else USER_ERROR), message
    if isinstance(e, MemoryError):
        return FAULT, "out of memory; use a smaller --batch-size (or batch_size), or a machine with more memory"
    first = str(e).splitlines()[0] if str(e) else ""
    return FAULT, (f"internal error, {type(e).__name__}: {first}; this is a bug of torch-elmo: run again with "
                   "--debug (or ELMO_DEBUG=1) for the traceback and report it")
