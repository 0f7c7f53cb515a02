"""Build a CLIPTokenizer offline for a fixed vocabulary of words.

CLIP's tokenizer is byte-level BPE with an end-of-word suffix `</w>`. Given a
word list we emit a vocab (every byte symbol, with and without `</w>`, plus one
token per word) and merges that turn every listed word into exactly one token.
Merges are derived word by word from how the merges so far already split the
word, and appended at lowest priority, so a later word never changes how an
earlier one tokenizes. Unknown words still tokenize (into bytes).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path

from unsee.errors import UnseeError
from unsee.files import atomic_write_text

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
_WORD = re.compile(r"^[a-z]+$")


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable-unicode map."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs), strict=True))


def _apply_merges(symbols: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    while len(symbols) > 1:
        pairs = [(ranks.get((a, b), 1 << 30), i) for i, (a, b) in enumerate(zip(symbols, symbols[1:], strict=False))]
        rank, i = min(pairs)
        if rank == 1 << 30:
            break
        symbols = symbols[:i] + [symbols[i] + symbols[i + 1]] + symbols[i + 2 :]
    return symbols


def build_vocab(words: Iterable[str]) -> tuple[dict[str, int], list[str]]:
    """(vocab, merges) such that each word in `words` is a single token."""
    words = list(dict.fromkeys(words))
    for w in words:
        if not _WORD.match(w):
            raise UnseeError(f"tokenizer words must be lowercase ascii letters, got {w!r}")
    base = list(_bytes_to_unicode().values())
    vocab_list = base + [c + "</w>" for c in base]
    merges: list[tuple[str, str]] = []
    ranks: dict[tuple[str, str], int] = {}
    known = set(vocab_list)
    for w in words:
        symbols = _apply_merges(list(w[:-1]) + [w[-1] + "</w>"], ranks)
        while len(symbols) > 1:  # merge left to right until one token
            pair = (symbols[0], symbols[1])
            ranks[pair] = len(merges)
            merges.append(pair)
            symbols = [symbols[0] + symbols[1]] + symbols[2:]
            if symbols[0] not in known:
                known.add(symbols[0])
                vocab_list.append(symbols[0])
    vocab_list += [BOS, EOS]
    vocab = {tok: i for i, tok in enumerate(vocab_list)}
    return vocab, [f"{a} {b}" for a, b in merges]


def save_tokenizer_files(words: Iterable[str], out_dir: str | Path, model_max_length: int = 77) -> Path:
    """Write vocab.json, merges.txt and tokenizer_config.json that `CLIPTokenizer.from_pretrained` loads."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    vocab, merges = build_vocab(words)
    atomic_write_text(out_dir / "vocab.json", json.dumps(vocab, ensure_ascii=False))
    atomic_write_text(out_dir / "merges.txt", "#version: 0.2\n" + "\n".join(merges) + "\n")
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": model_max_length,
        "bos_token": BOS,
        "eos_token": EOS,
        "unk_token": EOS,
        "pad_token": EOS,
    }
    atomic_write_text(out_dir / "tokenizer_config.json", json.dumps(config, indent=2))
    return out_dir


def build_clip_tokenizer(words: Iterable[str], out_dir: str | Path, model_max_length: int = 77):
    """Write the tokenizer files and load them as a `transformers.CLIPTokenizer`."""
    from transformers import CLIPTokenizer

    save_tokenizer_files(words, out_dir, model_max_length)
    return CLIPTokenizer.from_pretrained(str(out_dir))
