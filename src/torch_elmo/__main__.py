"""`python -m torch_elmo`: the `elmo` command."""

from .cli import main

raise SystemExit(main(prog="python -m torch_elmo"))
