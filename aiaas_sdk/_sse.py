"""Server-Sent Events: an I/O-free line parser and the reconnect policy, shared by
the sync and async streams of a run's events."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from .wire import RunEvent


END = "end"


@dataclass
class SSEParser:
    """Feed it lines (without newline); it returns a RunEvent when one is complete,
    or ``END`` when the server says the stream is over (the run ended)."""

    _data: list[str] = field(default_factory=list)
    _event: str = "message"

    def feed(self, line: str) -> RunEvent | str | None:
        if line == "":
            event, self._event = self._event, "message"
            if event == END:
                self._data = []
                return END
            if not self._data:
                return None
            payload = "\n".join(self._data)
            self._data = []
            return RunEvent.model_validate(json.loads(payload))
        if line.startswith(":"):
            return None  # a keep-alive comment
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        return None


@dataclass
class Reconnect:
    """When to give up: after ``attempts`` failures in a row with no event in between."""

    attempts: int = 8
    backoff: float = 0.2
    failures: int = 0

    def failed(self) -> float | None:
        """A connection dropped: seconds to wait before retrying, or None to give up."""
        self.failures += 1
        if self.failures > self.attempts:
            return None
        return min(self.backoff * 2 ** (self.failures - 1), 5.0)

    def progressed(self) -> None:
        self.failures = 0


@dataclass
class Resume:
    """Where a run's event stream stands: the last seq seen, and the reconnect budget.

    ``handle`` is the per-line step shared by the sync and async readers.
    """

    after: int
    policy: Reconnect = field(default_factory=Reconnect)
    parser: SSEParser = field(default_factory=SSEParser)

    def reconnecting(self) -> None:
        self.parser = SSEParser()

    def handle(self, line: str) -> RunEvent | str | None:
        event = self.parser.feed(line)
        if isinstance(event, RunEvent):
            self.after = event.seq
            self.policy.progressed()
        return event
