"""Augmentation building blocks: EDA ops, WordNet from Debian's folder, back-translation, the selection rules."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from llmopt.data.augment.eda import OPS, Synonyms, eda, rng_for, stop_words
from llmopt.data.augment.wordnet import DEBIAN_WORDNET, load_wordnet

needs_wordnet = pytest.mark.skipif(not (DEBIAN_WORDNET / "data.noun").is_file(),
                                   reason="Debian wordnet-base not installed (apt-get install wordnet-base)")


@pytest.fixture(scope="module")
def synonyms() -> Synonyms:
    try:
        return Synonyms(load_wordnet())
    except Exception as e:  # noqa: BLE001 - no WordNet at all on this machine
        pytest.skip(f"no WordNet: {e}")


TEXT = "A dull and boring film that wastes a great cast and a good story"


@pytest.mark.parametrize("op", OPS)
def test_eda_ops_are_deterministic_under_a_seed_and_change_the_text(op, synonyms):
    a = eda(TEXT, op, 0.2, rng_for(7, 3, op, 0), synonyms)
    assert a == eda(TEXT, op, 0.2, rng_for(7, 3, op, 0), synonyms)  # same seed, row, op, copy: same text
    outs = {eda(TEXT, op, 0.2, rng_for(s, 3, op, 0), synonyms) for s in range(6)}
    assert len(outs) > 1 and TEXT not in outs  # seeds matter, and every op changes this row


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("text", ["film", "bad film", "the", "  good  "])
def test_eda_never_empties_a_row(op, text, synonyms):
    for seed in range(20):
        assert eda(text, op, 0.5, rng_for(seed, 0, op, 0), synonyms).strip()


def test_random_deletion_and_swap_keep_the_words(synonyms):
    words = TEXT.split()
    swapped = eda(TEXT, "swap", 0.1, rng_for(1, 0, "swap", 0), synonyms).split()
    assert sorted(swapped) == sorted(words) and swapped != words
    deleted = eda(TEXT, "delete", 0.3, rng_for(1, 0, "delete", 0), synonyms).split()
    assert 0 < len(deleted) < len(words) and all(w in words for w in deleted)


def test_ngram_sampling_gives_a_shorter_contiguous_run_of_one_to_five_words(synonyms):
    words = TEXT.split()
    lengths = set()
    for seed in range(40):
        out = eda(TEXT, "ngram", 0.1, rng_for(seed, 0, "ngram", 0), synonyms).split()
        assert 1 <= len(out) <= 5
        assert any(words[i : i + len(out)] == out for i in range(len(words)))  # a contiguous run of the row
        lengths.add(len(out))
    assert len(lengths) >= 4  # n varies
    assert eda("bad film", "ngram", 0.1, rng_for(0, 0, "ngram", 0), synonyms) in ("bad", "film")


def test_synonym_replacement_uses_wordnet_synonyms_of_the_part_of_speech_and_skips_stop_words(synonyms):
    assert "movie" in synonyms("film") and "flick" in synonyms("film")
    assert synonyms("the") == ()  # not in WordNet
    assert "run" in synonyms("running", "VBG") and "running" not in synonyms("running", "VBG")
    assert synonyms.best_pos("film") == "n" and synonyms.best_pos("quickly") == "r"
    out = eda("the film", "synonym", 0.1, rng_for(0, 0, "synonym", 0), synonyms).split(" ", 1)
    assert out[0] == "the" and out[1] in synonyms("film")  # "the" is a stop word: never replaced
    assert "the" in stop_words()
    ins = eda("the film", "insert", 0.1, rng_for(0, 0, "insert", 0), synonyms)
    assert len(ins.split()) > 2 and "the" in ins and "film" in ins


@needs_wordnet
def test_wordnet_works_from_the_debian_folder_with_the_three_fixes(tmp_path):
    import nltk

    from llmopt.data.augment.wordnet import _debian_reader, debian_copy

    folder = debian_copy(DEBIAN_WORDNET, cache=tmp_path)
    lexnames = (folder / "lexnames").read_text().splitlines()
    assert len(lexnames) == 45 and lexnames[0] == "00\tadj.all\t3" and lexnames[44] == "44\tadj.ppl\t3"
    assert not (DEBIAN_WORDNET / "lexnames").exists()  # Debian's folder itself is untouched
    wn = _debian_reader(folder)
    assert wn.map_wn() is None
    assert str(tmp_path / "nltk_data") in nltk.data.path
    assert "movie" in [lem.name() for lem in wn.synset("film.n.01").lemmas()]
    assert wn.synsets("film")[0].lexname() == "noun.communication"  # lexnames read from the written file


def test_missing_wordnet_says_how_to_install_it(tmp_path):
    from llmopt.errors import DataError

    with pytest.raises(DataError, match=r"apt-get install wordnet-base"):
        load_wordnet(tmp_path / "no-wordnet", prefer_nltk=False)


# ---------------------------------------------------------------- back-translation

@pytest.mark.skipif(shutil.which("apertium") is None, reason="apertium not installed (apt-get install apertium-eng-spa)")
def test_apertium_round_trip_keeps_rows_aligned_in_one_batch():
    from llmopt.data.augment.backtranslate import Apertium, back_translate

    texts = ["The film is good.", "I hated every minute of it", "A dull, boring mess; no stars.",
             "line one\nline two", "[[[0]]] is not a marker inside a row"]
    out = back_translate(texts, Apertium(), batch_rows=10)
    assert out.failed == [] and sorted(out.texts) == [0, 1, 2, 3, 4]
    assert out.texts[0].lower().startswith("the film") and "minute" in out.texts[1]
    assert "boring" in out.texts[2] and "line two" in out.texts[3]


def test_missing_apertium_says_how_to_install_it(monkeypatch):
    from llmopt.data.augment import backtranslate
    from llmopt.errors import DataError

    monkeypatch.setattr(backtranslate.shutil, "which", lambda name: None)
    with pytest.raises(DataError, match=r"apt-get install apertium-eng-spa"):
        backtranslate.Apertium()


@pytest.mark.skipif(shutil.which("apertium") is None, reason="apertium not installed")
def test_an_apertium_pair_that_is_not_installed_is_refused_up_front():
    from llmopt.data.augment.backtranslate import Apertium
    from llmopt.errors import DataError

    with pytest.raises(DataError, match=r"pair eng-xyz does not run .*apt-get install apertium-eng-spa"):
        Apertium(forward="eng-xyz")


class _Flaky:
    """Upper-cases texts; a batch holding 'BOOM' fails every time, one holding 'ONCE' fails the first time."""

    name = "flaky"

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def round_trip(self, texts: list[str]) -> list[str]:
        from llmopt.data.augment.backtranslate import TranslationError

        self.calls.append(texts)
        if any("BOOM" in t for t in texts) or (any("ONCE" in t for t in texts) and self.calls.count(texts) == 1):
            raise TranslationError("translator died")
        return [t.upper() for t in texts]


def test_a_failing_batch_is_retried_then_reported_and_other_rows_are_kept():
    from llmopt.data.augment.backtranslate import back_translate

    texts = ["a", "b", "c BOOM", "d", "e ONCE", "f"]
    tr = _Flaky()
    out = back_translate(texts, tr, batch_rows=2)
    assert out.texts == {0: "A", 1: "B", 4: "E ONCE", 5: "F"}
    assert out.failed == [{"start": 2, "end": 4, "error": "translator died", "attempts": 2}]
    # the batch that always fails was tried twice; the one that failed once succeeded on its retry
    assert tr.calls == [["a", "b"], ["c BOOM", "d"], ["c BOOM", "d"], ["e ONCE", "f"], ["e ONCE", "f"]]


def _tiny_marian(folder: Path, seed: int) -> Path:
    """A randomly initialised 1-layer Marian model with a word-level fast tokenizer."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import MarianConfig, MarianMTModel, PreTrainedTokenizerFast

    words = "<pad> </s> <unk> the a film movie good bad is was great dull very".split()
    tk = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tk.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    torch.manual_seed(seed)
    cfg = MarianConfig(vocab_size=len(words), d_model=16, encoder_layers=1, decoder_layers=1,
                       encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
                       max_position_embeddings=64, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
                       forced_eos_token_id=1)
    MarianMTModel(cfg).save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def marian_pair(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("marian")
    return _tiny_marian(root / "en-xx", 1), _tiny_marian(root / "xx-en", 2)


def test_marian_round_trip_with_tiny_random_models(marian_pair):
    from llmopt.data.augment.backtranslate import Marian, back_translate

    tr = Marian(*marian_pair, max_new_tokens=8)
    texts = ["the film is good", "a very dull movie", "bad"]
    out = back_translate(texts, tr, batch_rows=2)
    assert out.failed == [] and sorted(out.texts) == [0, 1, 2]
    again = back_translate(texts, Marian(*marian_pair, max_new_tokens=8), batch_rows=3)
    assert again.texts == out.texts  # greedy decoding: the same text whatever the batching
    vocab = set("the a film movie good bad is was great dull very".split())
    assert all(set(t.split()) <= vocab for t in out.texts.values())  # decoded from the model's own vocabulary
    assert "marian en-xx|xx-en" == tr.name


# ---------------------------------------------------------------- selection and the label filter

TRAIN = [{"text": "a great film", "label": "positive"}, {"text": "an awful film", "label": "negative"},
         {"text": "good fun", "label": "positive"}]


def test_select_drops_unchanged_and_duplicate_variants_with_the_row_they_duplicate():
    from llmopt.data.augment.build import Filter, select

    variants = [{"source_id": 0, "op": "swap", "text": "film great a"},
                {"source_id": 0, "op": "delete", "text": "A  great film"},       # unchanged (case, spaces)
                {"source_id": 2, "op": "insert", "text": "An awful FILM"},        # duplicates original row 1
                {"source_id": 0, "op": "synonym", "text": "film great a", "copy": 1}]  # duplicates a kept variant
    kept, dropped, _ = select(TRAIN, ["negative", "positive"], variants, [], Filter())
    assert kept == [{"text": "film great a", "label": "positive", "source_id": 0, "op": "swap"}]
    assert [(d["reason"], d.get("duplicate_of")) for d in dropped] == [
        ("unchanged", None), ("duplicate_of_original", 1), ("duplicate_variant", "0:swap:0")]
    assert dropped[1]["label"] == "positive"  # provenance: the label of its own source row


def test_label_filter_drops_a_variant_whose_label_flips(monkeypatch):
    """A stub classifier: 'awful' means negative. A synonym swap turning 'great' into 'awful' flips the label."""
    import numpy as np

    from llmopt.data.augment import label_filter
    from llmopt.data.augment.build import Filter, select

    def stub_probs(folder, texts, label_ids, allow_pickle=False):
        p_pos = np.array([0.1 if "awful" in t else 0.9 for t in texts])
        return np.where(np.asarray(label_ids) == 1, p_pos, 1 - p_pos)

    monkeypatch.setattr(label_filter, "label_probs", stub_probs)
    variants = [{"source_id": 0, "op": "synonym", "text": "a awful film"},    # positive source, now negative
                {"source_id": 0, "op": "synonym", "text": "a superb film"},
                {"source_id": 1, "op": "swap", "text": "film awful an"}]      # negative source stays negative
    kept, dropped, stats = select(TRAIN, ["negative", "positive"], variants, [], Filter(Path("stub"), 0.5))
    assert [r["text"] for r in kept] == ["a superb film", "film awful an"]
    assert [(d["text"], d["reason"], d["label_prob"]) for d in dropped] == [
        ("a awful film", "label_prob_below_min", 0.1)]
    assert dropped[0]["source_label_prob"] == 0.9
    assert stats["label_prob"]["variants_p50"] == pytest.approx(0.9)


def test_similarity_filter_drops_variants_far_from_their_source(monkeypatch):
    import numpy as np

    from llmopt.data.augment import label_filter
    from llmopt.data.augment.build import Filter, select

    monkeypatch.setattr(label_filter, "cosine_to_source",
                        lambda folder, src, var: np.array([0.95 if "film" in v else 0.2 for v in var]))
    variants = [{"source_id": 0, "op": "backtranslate", "text": "a great movie film"},
                {"source_id": 2, "op": "backtranslate", "text": "nice entertainment"}]
    kept, dropped, _ = select(TRAIN, ["negative", "positive"], variants, [],
                              Filter(similarity_dir=Path("stub"), min_similarity=0.8))
    assert [r["text"] for r in kept] == ["a great movie film"] and kept[0]["similarity"] == 0.95
    assert [(d["text"], d["reason"]) for d in dropped] == [("nice entertainment", "similarity_below_min")]


def test_sentence_embedding_cosine_is_one_for_the_same_text_and_lower_for_another(minilm_path):
    from llmopt.data.augment.label_filter import cosine_to_source

    cos = cosine_to_source(minilm_path, ["a great film", "a great film"], ["a great film", "tax law of 1998"])
    assert cos[0] == pytest.approx(1.0, abs=1e-5) and cos[1] < 0.5
