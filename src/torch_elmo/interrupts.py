"""SIGINT and SIGTERM for the long-running loops (`elmo embed`, training): one place that
installs a handler for both and puts the previous handlers back."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def on_stop_signals(handler: Callable[[int, object], None]) -> Iterator[None]:
    """Calls `handler(signum, frame)` on SIGINT / SIGTERM inside the block (main thread only:
    elsewhere Python cannot install handlers, and the block runs without them)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)


class DeferredInterrupts:
    """Inside `with DeferredInterrupts() as interrupts:`, SIGINT and SIGTERM raise
    KeyboardInterrupt, except inside `with interrupts.critical():` (a file write), where they
    wait for its end, so that an interrupt never cuts a write short."""

    def __init__(self):
        self.depth = 0
        self.pending = False
        self._handlers: contextlib.ExitStack | None = None

    def __enter__(self) -> DeferredInterrupts:
        self._handlers = contextlib.ExitStack()
        self._handlers.enter_context(on_stop_signals(self._handler))
        return self

    def __exit__(self, *exc) -> None:
        self._handlers.close()

    def _handler(self, signum, frame) -> None:
        if self.depth:
            self.pending = True
        else:
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def critical(self) -> Iterator[None]:
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1
            if not self.depth and self.pending:
                self.pending = False
                raise KeyboardInterrupt
