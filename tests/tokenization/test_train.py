"""Training BPE / Unigram / WordPiece: exact round trips, the promised text handling, loading, bad sizes."""

import json

import pytest
from pydantic import ValidationError

from llmopt.errors import DataError
from llmopt.tokenization.config import TokenizerTrainConfig
from llmopt.tokenization.train import save_tokenizer, train_tokenizer

WORDS = ("the film story actor scene plot music camera script comedy drama ending hero villain city night love war "
         "family river school dark bright slow quick funny sad warm cold strange simple grand brave gentle").split()
CORPUS = [" ".join(WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(10)) + (", really." if i % 3 else " !")
          for i in range(300)] + [f"scene {i} of {i * 37}" for i in range(40)]
REFERENCES = [
    "Café naïve résumé — déjà vu, São Paulo",          # accents
    "I ❤️ this 🤖🎉 film!",                             # emoji (with a variation selector)
    "see https://example.com/a?b=1&c=2#top now",      # URL
    "pay $1,234.56 on 2024-01-02 at 10:30",            # digits
    'wait... what?! (yes); "quoted" \'single\' [x]',  # punctuation
]
BYTES = [("bpe", "byte_fallback"), ("bpe", "byte_level"), ("unigram", "byte_fallback"), ("unigram", "byte_level")]


def _fast(tmp_path, **kw):
    from transformers import AutoTokenizer

    cfg = TokenizerTrainConfig(**{"vocab_size": 500, "min_frequency": 1, **kw})
    folder = save_tokenizer(train_tokenizer(CORPUS, cfg), cfg.special_tokens, tmp_path / "tok")
    return AutoTokenizer.from_pretrained(str(folder))


@pytest.mark.parametrize("algorithm, bytes_", BYTES)
def test_byte_tokenizers_round_trip_every_reference_string(tmp_path, algorithm, bytes_):
    tok = _fast(tmp_path, algorithm=algorithm, bytes=bytes_)
    for ref in REFERENCES:
        ids = tok(ref)["input_ids"]
        assert tok.unk_token_id not in ids, ref
        assert tok.decode(ids, skip_special_tokens=True) == ref
    # unseen characters really went through the byte path: the emoji are not in the 500-token vocabulary
    if bytes_ == "byte_fallback":
        assert "<0xF0>" in tok.tokenize("🤖")


@pytest.mark.parametrize("algorithm", ["bpe", "unigram", "wordpiece"])
def test_without_bytes_known_text_round_trips_and_unseen_characters_are_unknown(tmp_path, algorithm):
    tok = _fast(tmp_path, algorithm=algorithm, bytes="none")
    text = "the brave hero, really. a strange night !"
    assert tok.decode(tok(text)["input_ids"], skip_special_tokens=True) == text
    assert tok.unk_token_id in tok("the 🤖 film")["input_ids"]


def test_text_handling_choices_are_applied(tmp_path):
    tok = _fast(tmp_path, algorithm="bpe", lowercase=True)
    assert tok.tokenize("ﬁlm ＦＩＬＭ") == tok.tokenize("film film")         # NFKC + lowercase
    assert [t.lstrip("▁") for t in tok.tokenize("in 2024") if t != "▁"] == ["in", "2", "0", "2", "4"]  # digit split
    assert all(not (any(c.isalpha() for c in t) and any(c in ",.!" for c in t)) for t in tok.tokenize(CORPUS[1]))
    ids = tok("the film")["input_ids"]
    assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id       # [CLS] … [SEP]
    assert tok.pad_token == "[PAD]" and tok.mask_token == "[MASK]" and 261 < len(tok) <= 500
    saved = json.loads((tmp_path / "tok" / "tokenizer_config.json").read_text())
    assert saved["tokenizer_class"] == "PreTrainedTokenizerFast"


def test_no_split_choices_keep_digits_and_punctuation_mergeable(tmp_path):
    tok = _fast(tmp_path, algorithm="bpe", split_digits=False, split_punctuation=False)
    assert any(c.isalpha() and "," in t for t in tok.tokenize(CORPUS[1]) for c in t)  # "story," merged


def test_empty_corpus_and_vocab_below_alphabet_name_the_field():
    with pytest.raises(DataError, match="empty"):
        train_tokenizer(["", "  "], TokenizerTrainConfig())
    with pytest.raises(DataError, match=r"vocab_size: 30 .*alphabet.*\(\d+\)"):
        train_tokenizer(CORPUS, TokenizerTrainConfig(vocab_size=30, bytes="none"))
    with pytest.raises(DataError, match="256 byte pieces"):
        train_tokenizer(CORPUS, TokenizerTrainConfig(vocab_size=270))
    with pytest.raises(ValidationError, match="vocab_size: 100 is smaller than the 256-byte alphabet"):
        TokenizerTrainConfig(vocab_size=100, bytes="byte_level")
    with pytest.raises(ValidationError, match="not available for wordpiece"):
        TokenizerTrainConfig(algorithm="wordpiece", bytes="byte_fallback")
