"""Named bad-input cases (data files, recipes, model folders), shared by the tests and bench/bad_inputs.py."""

from __future__ import annotations

import json
from pathlib import Path

POS = ["a great film", "wonderful acting", "i loved it", "funny and warm"]
NEG = ["a dull mess", "boring and long", "i hated it", "a waste of time"]


def good_rows(n: int = 40) -> str:
    rows = [{"text": f"{(POS if i % 2 else NEG)[i % 4]} {i}", "label": "pos" if i % 2 else "neg"} for i in range(n)]
    return "".join(json.dumps(r) + "\n" for r in rows)


def make_tiny_bert(out: Path, tokenizer_from: Path) -> Path:
    """A 2-layer, 32-wide BERT with random weights and the given tokenizer, saved as a model folder."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(str(tokenizer_from))
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128, num_labels=2)
    BertForSequenceClassification(cfg).save_pretrained(str(out))
    tok.save_pretrained(str(out))
    return out


def _recipe(folder: Path, source: str, model: str = "{builtin: minilm}", extra: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / "recipe.yaml"
    p.write_text(
        "version: 1\nname: bad\nstages:\n"
        f"  - {{id: data, type: data, source: {source}}}\n"
        f"  - {{id: ft, type: finetune, model: {model}, epochs: 1}}\n" + extra
    )
    return p


def named_cases(root: Path, tiny_model: Path) -> dict[str, tuple[str, Path, str]]:
    """{case: (category, recipe path, text the error must contain)}."""
    root = Path(root)
    files = root / "files"
    files.mkdir(parents=True, exist_ok=True)
    good = good_rows()

    def write(name: str, content: bytes | str) -> str:
        p = files / name
        p.write_bytes(content if isinstance(content, bytes) else content.encode())
        return f"{{path: {p}}}"

    data = {
        "invalid utf-8": (write("a.jsonl", good.encode() + b'{"text": "\xff", "label": "x"}\n'), "not valid UTF-8"),
        "bad json line": (write("b.jsonl", good + '{"text": oops}\n'), ":41: invalid JSON"),
        "1 MB line": (write("c.jsonl", good + '{"text": "' + "x" * 1_000_000 + '"}\n'), "missing column 'label'"),
        "nan label": (write("d.jsonl", good + '{"text": "t", "label": NaN}\n'), "must be a class label"),
        "empty label": (write("e.jsonl", good + '{"text": "t", "label": ""}\n'), "empty label"),
        "wrong json type": (write("f.jsonl", good + '{"text": 5, "label": "a"}\n'), "must be a string"),
        "array line": (write("g.jsonl", good + "[1, 2]\n"), "expected a JSON object"),
        "missing column": (write("h.csv", "sentence,label\nhi,a\n"), "missing column 'text'"),
        "extra columns": (write("i.csv", "text,label\nhi,a,b\n"), "more fields than the header"),
        "one class": (write("j.jsonl", "".join(json.dumps({"text": f"t{i}", "label": "a"}) + "\n" for i in range(30))),
                      "one class only"),
        "empty file": (write("k.jsonl", ""), "split is empty"),
        "random bytes parquet": (write("l.parquet", b"\x00\x01garbage"), "not a readable Parquet"),
    }
    out = {k: ("data", _recipe(root / f"d{i}", src), msg) for i, (k, (src, msg)) in enumerate(data.items())}
    no_tok = root / "no-tokenizer"
    no_tok.mkdir(exist_ok=True)
    for f in ("config.json", "model.safetensors"):
        (no_tok / f).write_bytes((tiny_model / f).read_bytes())
    ok = data["bad json line"][0].replace("b.jsonl", "ok.jsonl")
    (files / "ok.jsonl").write_text(good)
    out["model folder without tokenizer"] = ("model", _recipe(root / "m1", ok, model=str(no_tok)), "no tokenizer files")
    out["unknown model folder"] = ("model", _recipe(root / "m2", ok, model=str(root / "nope")), "nor an existing model folder")
    out["duplicate stage ids"] = ("recipe", _recipe(root / "m3", ok, extra="  - {id: ft, type: report}\n"), "duplicate stage id")
    out["unknown stage reference"] = ("recipe", _recipe(root / "m4", ok, extra="  - {id: ev, type: evaluate, models: [ft], data: dat}\n"),
                                      "did you mean 'data'")
    out["later stage reference"] = ("recipe", _recipe(root / "m5", ok, extra="  - {id: ev, type: evaluate, models: [rep]}\n  - {id: rep, type: report}\n"),
                                    "runs later")
    return out
