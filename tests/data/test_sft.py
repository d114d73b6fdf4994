"""SFT and causal-LM data: readers with row-precise errors, the instruction template, label parsing."""

import json

import pytest

from llmopt.data import sft
from llmopt.errors import DataError


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_read_sft_prompt_response_and_messages(tmp_path):
    p = _jsonl(tmp_path / "a.jsonl", [
        {"prompt": "2+2?", "response": "4"},
        {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"},
                      {"role": "assistant", "content": "hello"}]},
    ])
    got = sft.read_sft(p)
    assert got[0] == [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]
    assert [m["role"] for m in got[1]] == ["system", "user", "assistant"]


def test_sft_row_without_response_names_file_and_line(tmp_path):
    p = _jsonl(tmp_path / "a.jsonl", [{"prompt": "a", "response": "b"}, {"prompt": "c"}])
    with pytest.raises(DataError, match=r"a\.jsonl:2: no 'response'"):
        sft.read_sft(p)
    p = _jsonl(tmp_path / "b.jsonl", [{"messages": [{"role": "user", "content": "only a question"}]}])
    with pytest.raises(DataError, match=r"b\.jsonl:1: no assistant message"):
        sft.read_sft(p)
    p = _jsonl(tmp_path / "c.jsonl", [{"messages": [{"role": "bot", "content": "x"}]}])
    with pytest.raises(DataError, match=r"c\.jsonl:1: messages\[0\]"):
        sft.read_sft(p)
    (tmp_path / "d.jsonl").write_text('{"prompt": "a", "response": "b"}\n{oops\n')
    with pytest.raises(DataError, match=r"d\.jsonl:2: invalid JSON"):
        sft.read_sft(tmp_path / "d.jsonl")


def test_read_documents_txt_and_jsonl(tmp_path):
    (tmp_path / "a.txt").write_text("first doc\nline two\n\n  \nsecond doc\n\n\nthird\n")
    assert sft.read_documents(tmp_path / "a.txt") == ["first doc\nline two", "second doc", "third"]
    p = _jsonl(tmp_path / "b.jsonl", [{"text": "x"}, {"text": "y"}])
    assert sft.read_documents(p) == ["x", "y"]
    p = _jsonl(tmp_path / "c.jsonl", [{"text": "x"}, {"body": "y"}])
    with pytest.raises(DataError, match=r"c\.jsonl:2: no string field 'text'"):
        sft.read_documents(p)


def test_hold_out_is_seeded_disjoint_and_never_empty():
    items = list(range(20))
    tr, dev = sft.hold_out(items, 0.1, seed=1)
    assert len(dev) == 2 and sorted(tr + dev) == items
    assert sft.hold_out(items, 0.1, seed=1) == (tr, dev) and sft.hold_out(items, 0.1, seed=2) != (tr, dev)
    assert len(sft.hold_out([1, 2], 0.01, 0)[1]) == 1
    with pytest.raises(DataError):
        sft.hold_out([1], 0.5, 0)


def test_template_fields_reject_unknown_names():
    assert sft.template_fields("Is it {labels}?\n{text}") == ["labels", "text"]
    with pytest.raises(ValueError, match=r"unknown field \{review\}"):
        sft.template_fields("{review}")
    with pytest.raises(ValueError, match=r"must contain \{text\}"):
        sft.template_fields("no text here")


def test_build_messages_and_parse_label():
    ins = {"template": "Sentiment ({labels})? {text}", "label_words": sft.label_word_map(
        ["negative", "positive"], {"negative": "bad", "positive": "good"})}
    assert sft.build_messages("fine film", ins) == [{"role": "user", "content": "Sentiment (bad, good)? fine film"}]
    words = ins["label_words"]
    assert sft.parse_label("Good", words) == "positive"
    assert sft.parse_label("  bad.", words) == "negative"
    assert sft.parse_label("I think it is good", words) == "positive"
    assert sft.parse_label("good, not bad", words) == "positive"  # the answer's first word decides
    assert sft.parse_label("it is good and bad", words) is None  # two answers, neither first
    assert sft.parse_label("goodness", words) is None  # not a whole word
    assert sft.parse_label("", words) is None


def test_label_words_must_name_known_labels_and_be_distinct():
    with pytest.raises(DataError, match="does not have"):
        sft.label_word_map(["a", "b"], {"c": "x"})
    with pytest.raises(DataError, match="share an answer word"):
        sft.label_word_map(["a", "b"], {"a": "b"})


def test_instruction_file_round_trip(tmp_path):
    assert sft.read_instruction(tmp_path) is None
    sft.write_instruction(tmp_path, "Q: {text}", {"pos": "yes", "neg": "no"})
    assert sft.read_instruction(tmp_path) == {"template": "Q: {text}", "label_words": {"pos": "yes", "neg": "no"}}
    (tmp_path / sft.INSTRUCTION_FILE).write_text('{"template": "{nope}", "label_words": {"a": "b"}}')
    with pytest.raises(DataError, match="llmopt_instruction.json"):
        sft.read_instruction(tmp_path)
