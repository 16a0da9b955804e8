"""Generated ids -> text deltas, cut at the first stop string.

Why its own module: a server must end a request the moment its text contains a stop string
(so its cache row is freed at once), must never send the stop string itself, and must never
cut a multi-byte UTF-8 character. The `StreamDecoder` already returns only whole
characters; this keeps back, besides, the shortest tail of the text that could still grow
into a stop string, and sends it only once it cannot. The same tail test serves the chat
parser, which keeps back what could still grow into `</think>` or a DSML block.
"""

from __future__ import annotations

from v4c.runtime.tokenizer import StreamDecoder, V4Tokenizer


def partial_tail(text: str, markers: tuple[str, ...]) -> int:
    """The index where the longest tail of `text` that is a proper prefix of some marker
    starts (len(text) when no tail is)."""
    longest = max((len(m) for m in markers), default=1) - 1
    for start in range(max(0, len(text) - longest), len(text)):
        tail = text[start:]
        if any(m.startswith(tail) for m in markers):
            return start
    return len(text)


class TextStream:
    """Ids in, text out: `push` returns the text that is final (whole characters, no part
    of a possible stop string) and whether a stop string was reached; `flush` returns what
    is still held back once generation ends for another reason."""

    def __init__(
        self, tokenizer: V4Tokenizer, stop: tuple[str, ...] = (), skip_special_tokens=False
    ):
        self._decoder = StreamDecoder(tokenizer, skip_special_tokens=skip_special_tokens)
        self._stop = tuple(s for s in stop if s)
        self._held = ""  # decoded text not sent yet: a possible start of a stop string

    def push(self, token: int) -> tuple[str, bool]:
        self._held += self._decoder.push(token)
        hits = [i for s in self._stop if (i := self._held.find(s)) != -1]
        if hits:
            text, self._held = self._held[: min(hits)], ""
            return text, True
        cut = partial_tail(self._held, self._stop) if self._stop else len(self._held)
        text, self._held = self._held[:cut], self._held[cut:]
        return text, False

    def flush(self) -> str:
        """The held-back text and any incomplete character (as U+FFFD)."""
        text, self._held = self._held + self._decoder.flush(), ""
        return text
