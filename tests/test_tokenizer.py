import pytest
from transformers import CLIPTokenizer

from unsee.errors import UnseeError
from unsee.tokenizer import build_clip_tokenizer, build_vocab

WORDS = ["red", "re", "green", "gre", "reed", "a", "photo", "of", "circle", "nude", "nudes"]


def test_every_word_is_one_token_whatever_the_order(tmp_path):
    for order in (WORDS, list(reversed(WORDS))):
        tok = build_clip_tokenizer(order, tmp_path / str(len(order)) / order[0])
        for w in order:
            ids = tok(w, add_special_tokens=False).input_ids
            assert len(ids) == 1, (w, tok.convert_ids_to_tokens(ids))
            assert tok.convert_ids_to_tokens(ids) == [w + "</w>"]


def test_saved_files_load_with_plain_transformers(tmp_path):
    build_clip_tokenizer(WORDS, tmp_path, model_max_length=16)
    tok = CLIPTokenizer.from_pretrained(str(tmp_path))
    out = tok("A photo of a RED circle", padding="max_length", max_length=tok.model_max_length)
    assert tok.model_max_length == 16
    assert len(out.input_ids) == 16
    assert out.input_ids[0] == tok.bos_token_id
    assert tok.decode(out.input_ids, skip_special_tokens=True) == "a photo of a red circle"


def test_unknown_words_still_tokenize_to_bytes(tmp_path):
    tok = build_clip_tokenizer(WORDS, tmp_path)
    ids = tok("zebra", add_special_tokens=False).input_ids
    assert len(ids) == 5
    assert tok.decode(ids) == "zebra"


def test_vocab_is_compact_and_refuses_non_words():
    vocab, merges = build_vocab(["cat", "cats"])
    assert "cat</w>" in vocab and "cats</w>" in vocab
    assert len(merges) == 4  # c+a, ca+t</w>, then ca+t, cat+s</w>
    with pytest.raises(UnseeError, match="lowercase ascii"):
        build_vocab(["Cat"])
