"""Each normalizer and filter on literal examples; MinHash signatures against datasketch's own."""

import numpy as np
import pytest
from pydantic import ValidationError

from llmopt.data.curate import normalize as N
from llmopt.data.curate.config import DedupConfig, FilterConfig, LanguageConfig, NormalizeConfig
from llmopt.data.curate.dedup import MinHasher, NearIndex, canonical, shingle_hashes
from llmopt.data.curate.filters import first_failure


def test_mojibake_is_repaired():
    assert N.fix_mojibake("crÃ¨me brÃ»lÃ©e") == "crème brûlée"
    assert N.fix_mojibake("itâ€™s great") == "it’s great"
    assert N.fix_mojibake("plain text") == "plain text"


def test_html_tags_and_entities_go():
    assert N.strip_html("<p>a great&nbsp;film &amp; more</p>").split() == ["a", "great", "film", "&", "more"]
    assert N.strip_html('<div class="x"><script>var a=1;</script>it&#39;s <b>fine</b></div>').strip() == "it's fine"
    assert N.strip_html("5 < 6 and 7 > 2") == "5 < 6 and 7 > 2"  # not tags


def test_mail_headers_and_quoted_replies_go():
    mail = ("From: a@b.com\nTo: c@d.com\nSubject: re: film\n\nI liked it.\n"
            "On Mon, 3 May 2004, Bob wrote:\n> it was dull\n> very\n-----Original Message-----\nold stuff")
    assert N.strip_mail(mail).split() == ["I", "liked", "it."]
    assert N.strip_mail("Subject: the film was great") == "Subject: the film was great"  # one line is not a header block


def test_control_nfkc_whitespace_lowercase():
    assert N.strip_control("a\x00b\x07c\u200bd\ufeff\te") == "abcd\te"
    assert N.nfkc("ﬁlm ＡＢＣ") == "film ABC"
    assert N.collapse_whitespace("  a \n\t b  ") == "a b"
    text, changed = N.normalize("  <b>ＧＲＥＡＴ</b>  film\x00 ", NormalizeConfig(lowercase=True))
    assert text == "great film" and changed == ["html", "control", "nfkc", "lowercase"]  # html tidies its own spaces
    text, changed = N.normalize("<b>x</b>", NormalizeConfig(html=False))
    assert text == "<b>x</b>" and changed == []


@pytest.mark.parametrize("text,cfg,reason", [
    ("   ", {}, "empty"),
    ("too short", {"min_words": 3}, "too_short"),
    ("abc", {"min_chars": 5}, "too_short"),
    ("one two three four", {"max_words": 3}, "too_long"),
    ("x" * 20, {"max_chars": 10, "max_char_run": None}, "too_long"),
    ("12345 678 $$$ 90 %", {}, "non_alphabetic"),
    ("soooooooooooo good", {}, "repeated_chars"),
    ("buy buy buy buy buy now", {}, "repeated_words"),
    ("Le film est une réussite totale, les acteurs sont excellents et l'histoire est émouvante.",
     {"language": {"expected": ["en"]}}, "language:fr"),
    ("a gorgeous , witty , seductive movie .", {}, None),
    ("so good!!!", {}, None),
    ("le film .", {"language": {"expected": ["en"]}}, None),  # short: never judged
])
def test_filters_give_their_reason(text, cfg, reason):
    assert first_failure(text, FilterConfig(**cfg)) == reason


def test_impossible_ranges_are_refused():
    with pytest.raises(ValidationError, match="min_chars .50. is greater than max_chars .10."):
        FilterConfig(min_chars=50, max_chars=10)
    with pytest.raises(ValidationError, match="min_words"):
        FilterConfig(min_words=5, max_words=2)
    with pytest.raises(ValidationError):
        LanguageConfig(min_confidence=1.5)


def test_canonical_key_ignores_case_and_punctuation():
    assert canonical("A Great Film!!") == canonical("a great film .") == "a great film"


def test_signatures_equal_datasketch_minhash_on_the_same_hashes():
    from datasketch import MinHash

    cfg = DedupConfig(num_perm=64)
    key = "a stirring , funny and finally transporting re-imagining"
    hashes = shingle_hashes(key, "char", 5)
    ref = MinHash(num_perm=64, seed=1, hashfunc=lambda x: x)
    ref.update_batch([int(h) for h in hashes])
    ours = MinHasher(cfg).signatures([key])[0]
    assert np.array_equal(ours, ref.hashvalues)


def test_near_index_finds_a_planted_near_duplicate_and_not_an_unrelated_row():
    cfg = DedupConfig()
    h = MinHasher(cfg)
    base = "the film is a charming and often moving journey through the life of a small town family"
    near = "the film is a charming and often touching journey through the life of a small town family"
    other = "a dull , plodding thriller that never finds its footing or a reason to exist"
    sb, sn, so = h.signatures([canonical(base), canonical(near), canonical(other)])
    idx = NearIndex(h, cfg.threshold)
    idx.add(0, sb)
    found = idx.best(sn)
    assert found is not None and found[0] == 0 and found[1] >= 0.7
    assert idx.best(so) is None


def test_compact_lsh_finds_what_datasketch_minhashlsh_finds():
    """Same bands and rows as datasketch's MinHashLSH; over several buffer flushes and run merges the candidates
    of every query equal datasketch's (a hash collision could only add one)."""
    from datasketch import LeanMinHash, MinHashLSH

    from llmopt.data.curate.dedup import CompactLSH

    rng = np.random.default_rng(0)
    base = rng.integers(0, 2**32, size=(300, 128), dtype=np.uint64).astype(np.uint32)
    near = base.copy()
    near[:, rng.choice(128, 40, replace=False)] = rng.integers(0, 2**32, size=(300, 40), dtype=np.uint64)
    ours = CompactLSH(0.5, 128, (0.2, 0.8), buffer_rows=16)
    theirs = MinHashLSH(threshold=0.5, num_perm=128, weights=(0.2, 0.8))
    assert (ours.b, ours.r) == (theirs.b, theirs.r)
    for k, sig in enumerate(base):
        ours.insert(k, sig)
        theirs.insert(k, LeanMinHash(seed=1, hashvalues=sig, scheme="affine32"))
    assert len(ours.runs) > 1  # runs were flushed and merged
    hits = 0
    for k, sig in enumerate(near):
        expected = set(theirs.query(LeanMinHash(seed=1, hashvalues=sig, scheme="affine32")))
        assert ours.query(sig) == expected
        hits += k in expected
    assert hits > 250
    flushed = sum(len(h) for h, _ in ours.runs) // ours.b
    assert flushed == 288 and sum(h.nbytes + k.nbytes for h, k in ours.runs) == 12 * ours.b * flushed


def test_pair_batches_give_every_bucket_pair_once_and_stay_within_their_limits():
    from llmopt.data.curate.partitions import _bucket_pairs, _pair_batches

    rng = np.random.default_rng(0)
    # many small buckets and two dense ones (300 and 120 rows sharing a key)
    k = np.concatenate([rng.integers(0, 400, 2000), np.full(300, 10_000), np.full(120, 20_000)]).astype(np.uint64)
    g = rng.permutation(len(k)).astype(np.int64)
    order = np.lexsort((g, k))
    k, g = k[order], g[order]
    a, b = _bucket_pairs(k, g)
    want = set(zip(a.tolist(), b.tolist()))
    got, sizes = [], []
    for a, b in _pair_batches(k, g, max_pairs=5_000, max_rows=200):
        assert (a < b).all()
        sizes.append(len(a))
        got += list(zip(a.tolist(), b.tolist()))
    assert len(got) == len(set(got)) and set(got) == want
    assert len(sizes) > 10 and max(sizes) <= 5_000 + 300  # a dense block ends on a row boundary
