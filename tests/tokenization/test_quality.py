"""Quality figures checked by hand on a tiny WordPiece vocabulary."""

import pytest

from llmopt.tokenization.quality import quality, word_pieces, worst_split_words

VOCAB = ["[UNK]", "the", "cat", "un", "##believ", "##able", "mouse", "sat"]


@pytest.fixture
def tok():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    t = Tokenizer(models.WordPiece({w: i for i, w in enumerate(VOCAB)}, unk_token="[UNK]"))
    t.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=t, unk_token="[UNK]")


def test_fertility_split_share_unknown_rate_and_use_by_hand(tok):
    # the | cat | un ##believ ##able | [UNK]   →  6 tokens over 4 words; 1 of 4 words in ≥ 2 pieces;
    # 1 of 6 tokens unknown; 6 distinct ids used ([UNK] the cat un ##believ ##able) of 8
    q = quality(tok, ["the cat unbelievable dog"])
    assert q["words"] == 4 and q["tokens"] == 6
    assert q["fertility"] == pytest.approx(1.5)
    assert q["split_share"] == pytest.approx(0.25)
    assert q["unk_rate"] == pytest.approx(1 / 6)
    assert q["vocab_used"] == 6 and q["vocab_utilization"] == pytest.approx(6 / 8)


def test_two_texts_add_up(tok):
    # + "the cat sat": 3 words, 3 tokens → 9 tokens / 7 words
    q = quality(tok, ["the cat unbelievable dog", "the cat sat"])
    assert q["fertility"] == pytest.approx(9 / 7) and q["split_share"] == pytest.approx(1 / 7)


def test_worst_split_words_rank_pieces_then_count(tok):
    assert word_pieces(tok, ["unbelievable", "cat"]) == [["un", "##believ", "##able"], ["cat"]]
    texts = ["unbelievable cat cat dog unable", "unbelievable, cat dog catsat catsat unable unable", "unbelievably"]
    # more pieces first, then more often: unbelievable (3 pieces, twice) before unable (un ##able, 3 times);
    # one-piece words (cat; catsat = [UNK], no ##sat) are not listed; unbelievably is seen once (< min_count)
    rows = worst_split_words(tok, texts, k=5, min_count=2)
    assert [(r["word"], r["count"], r["pieces"]) for r in rows] == [("unbelievable", 2, 3), ("unable", 3, 2)]
