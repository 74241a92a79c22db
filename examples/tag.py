"""A sequence tagger on ELMo: `python -m examples.tag train|evaluate ...` (--help)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main("tag"))
