"""The V4 tokenizer against the ids V4_REFERENCE §14 states, and the stream decoder against
whole-sequence decoding.

The package's tokenizer.json agrees with §14 on every id checked here (the worked example
included), and has 129280 ids, the model's embedding rows.
"""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers

from v4c.runtime.tokenizer import StreamDecoder, TokenizerError, load_tokenizer

EXAMPLE = "<｜User｜>你好<｜Assistant｜><think>推理</think>答案<｜end▁of▁sentence｜>"
EXAMPLE_IDS = [128803, 30594, 128804, 128821, 36101, 128822, 7624, 1]  # §14


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer()


@pytest.mark.parametrize(
    "text,expected",
    [
        ("<｜begin▁of▁sentence｜>", 0),
        ("<｜end▁of▁sentence｜>", 1),
        ("<｜User｜>", 128803),
        ("<｜Assistant｜>", 128804),
        ("<think>", 128821),
        ("</think>", 128822),
    ],
)
def test_special_ids_match_reference(tok, text, expected):
    assert tok.token_id(text) == expected
    assert tok.encode(text) == [expected]


def test_bos_eos_and_vocab_size(tok):
    assert (tok.bos_id, tok.eos_id) == (0, 1)
    assert tok.vocab_size == 129280


def test_worked_example_from_reference(tok):
    assert tok.encode(EXAMPLE) == EXAMPLE_IDS
    assert tok.decode(EXAMPLE_IDS) == EXAMPLE


def test_encode_adds_no_bos(tok):
    assert tok.encode("<｜begin▁of▁sentence｜>hello")[0] == 0
    assert 0 not in tok.encode("hello")


# tokenizer.json marks only BOS, EOS, pad and the place-holders "special": the role and
# think markers are ordinary added tokens, matched whole on encode and kept on a skip.
SKIPPED = "<｜User｜>你好<｜Assistant｜><think>推理</think>答案"


def test_decode_can_skip_special_tokens(tok):
    assert tok.decode([0] + EXAMPLE_IDS, skip_special_tokens=True) == SKIPPED


def test_token_id_of_unknown_text_names_it(tok):
    with pytest.raises(ValueError, match="not a token"):
        tok.token_id("<｜no_such_token｜>")


@pytest.mark.parametrize("text", ["龘靐齉", "Hi 😀🎉 你好世界", "🦜 parrot", "naïve café\n\n x"])
def test_stream_decoder_matches_whole_decode(tok, text):
    ids = tok.encode(text)
    stream = StreamDecoder(tok)
    pieces = [stream.push(i) for i in ids]
    assert "".join(pieces) + stream.flush() == tok.decode(ids) == text
    assert not any("\ufffd" in p for p in pieces)


def test_stream_decoder_waits_for_a_split_character(tok):
    # these rare characters are two byte-level tokens each: the first is a UTF-8 fragment
    ids = tok.encode("龘靐")
    assert len(ids) == 4 and "\ufffd" in tok.decode(ids[:1])
    stream = StreamDecoder(tok)
    assert [stream.push(i) for i in ids] == ["", "龘", "", "靐"]


def test_stream_decoder_flush_shows_an_incomplete_tail(tok):
    stream = StreamDecoder(tok)
    first_half = tok.encode("龘")[0]
    assert stream.push(first_half) == ""
    assert stream.flush() == "\ufffd"
    assert stream.flush() == ""


def test_stream_decoder_keeps_or_skips_special_tokens(tok):
    kept, skipped = StreamDecoder(tok), StreamDecoder(tok, skip_special_tokens=True)
    assert "".join(kept.push(i) for i in EXAMPLE_IDS) == EXAMPLE
    assert "".join(skipped.push(i) for i in EXAMPLE_IDS) == SKIPPED


def test_checkpoint_tokenizer_json_wins(tmp_path):
    vocab = {"<｜begin▁of▁sentence｜>": 0, "<｜end▁of▁sentence｜>": 1, "hello": 2, "[UNK]": 3}
    tiny = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tiny.pre_tokenizer = pre_tokenizers.Whitespace()
    tiny.save(str(tmp_path / "tokenizer.json"))
    tok = load_tokenizer(tmp_path)
    assert tok.vocab_size == 4 and tok.encode("hello") == [2]
    assert tok.source == tmp_path / "tokenizer.json"


def test_checkpoint_without_tokenizer_falls_back_to_package(tmp_path):
    assert load_tokenizer(tmp_path).vocab_size == 129280


def test_missing_checkpoint_folder_is_an_error(tmp_path):
    with pytest.raises(TokenizerError, match="does not exist"):
        load_tokenizer(tmp_path / "nope")


def test_tokenizer_without_bos_is_rejected(tmp_path):
    tiny = Tokenizer(models.WordLevel({"hello": 0, "[UNK]": 1}, unk_token="[UNK]"))
    tiny.save(str(tmp_path / "tokenizer.json"))
    with pytest.raises(TokenizerError, match="not a V4 tokenizer"):
        load_tokenizer(tmp_path)
