"""A sentence classifier on ELMo: `python -m examples.classify train|evaluate ...` (--help)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main("classify"))
