"""Structured bad inputs: what every case must do, the model-folder cases, and running a case.

The cases themselves come from `bad_data` (valid data files with one thing wrong) and `bad_recipes`
(shipped recipes with one field wrong); tests/reliability/test_bad_inputs.py and bench/bad_inputs.py
run them. A correct llmopt rejects a case with exit status 2 and one `llmopt: error:` line naming the
file and the place, no traceback and no run directory left behind; or, where the change leaves a
legal input (a UTF-8 BOM, a 1 MB row), loads every row.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import sys
import traceback
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

POS = ["a great film", "wonderful acting", "i loved it", "funny and warm"]
NEG = ["a dull mess", "boring and long", "i hated it", "a waste of time"]


@dataclass(frozen=True)
class Case:
    category: str  # the data format, "recipe" or "model"
    kind: str  # the mutation
    recipe: Path
    expect: tuple[str, ...] = ()  # regexes the error line must match: file, place, culprit
    rows: int | None = None  # a legal input: rows the data stage must write; None: must be rejected
    command: str = "run"


def dump_yaml(raw: dict) -> str:
    return yaml.safe_dump(raw, sort_keys=False, default_flow_style=None, width=1000, allow_unicode=True)


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


def make_tiny_llama(out: Path, hidden: int = 32, layers: int = 2) -> Path:
    """A 2-layer, 32-wide Llama (random weights, tied embeddings) with the bundled SmolLM2 tokenizer (read from
    its GGUF: ChatML template, BOS/EOS), saved as a causal-LM model folder."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from llmopt.llm import smollm2_gguf

    gguf = smollm2_gguf()
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id)
    LlamaForCausalLM(cfg).save_pretrained(str(out))
    tok.save_pretrained(str(out))
    return out


def model_cases(root: Path, tiny_model: Path) -> list[Case]:
    """A model folder without tokenizer files, and one that does not exist."""
    root = Path(root)
    root.mkdir(parents=True)
    (root / "ok.jsonl").write_text(good_rows())
    no_tok = root / "no-tokenizer"
    no_tok.mkdir()
    for f in ("config.json", "model.safetensors"):
        shutil.copy(Path(tiny_model) / f, no_tok / f)
    cases = []
    for kind, folder in (("model_without_tokenizer", no_tok), ("model_folder_missing", root / "nope")):
        raw = {"version": 1, "name": "bad-model", "stages": [
            {"id": "data", "type": "data", "source": {"path": str(root / "ok.jsonl")}},
            {"id": "ft", "type": "finetune", "model": str(folder)}]}
        p = root / f"{kind}.yaml"
        p.write_text(dump_yaml(raw), encoding="utf-8")
        cases.append(Case("model", kind, p, (re.escape(str(p)) + r":\d+", re.escape(str(folder)))))
    return cases + tokenizer_cases(root, tiny_model)


def tokenizer_cases(root: Path, tiny_model: Path) -> list[Case]:
    """One-stage tokenizer recipes: an empty corpus, a vocabulary below the alphabet, a tokenizer larger than its
    model's embedding, extend on an ONNX export (no input embeddings)."""
    text, blank = root / "domain.txt", root / "blank.txt"
    text.write_text("".join(json.loads(r)["text"] + "\n" for r in good_rows().splitlines()), encoding="utf-8")
    blank.write_text("\n  \n\n", encoding="utf-8")
    big = root / "tokenizer-larger-than-embedding"
    shutil.copytree(tiny_model, big)
    cfg = json.loads((big / "config.json").read_text(encoding="utf-8"))
    (big / "config.json").write_text(json.dumps({**cfg, "vocab_size": 100}), encoding="utf-8")
    onnx = root / "onnx-export"
    onnx.mkdir()
    for f in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(Path(tiny_model) / f, onnx / f)
    (onnx / "model.onnx").write_bytes(b"an exported graph")

    def stage(**kw: Any) -> dict:
        return {"id": "tok", "type": "tokenizer", "data": None, "texts": [str(text)], **kw}

    specs = [("tokenizer_empty_corpus", stage(texts=[str(blank)]), ("texts", "empty")),
             ("tokenizer_vocab_below_alphabet", stage(train={"vocab_size": 10, "bytes": "none"}),
              (r"train\.vocab_size: 10 ", "alphabet")),
             ("tokenizer_larger_than_embedding", stage(base=str(big)), ("base", re.escape(str(big)), "embedding")),
             ("extend_without_input_embeddings", stage(mode="extend", base=str(onnx)),
              ("base", re.escape(str(onnx)), "input embeddings"))]
    cases = []
    for kind, st, expect in specs:
        p = root / f"{kind}.yaml"
        p.write_text(dump_yaml({"version": 1, "name": "bad-tokenizer", "stages": [st]}), encoding="utf-8")
        cases.append(Case("model", kind, p, expect))
    return cases


def run_case(case: Case, runs: Path, subprocess_run: bool = False) -> tuple[str, str]:
    """('clear_error' | 'accepted_valid' | 'bad', why) for one case, in this process or a fresh one."""
    args = [case.command, str(case.recipe)] + (["--runs-dir", str(runs)] if case.command == "run" else [])
    if subprocess_run:
        done = subprocess.run([sys.executable, "-m", "llmopt.cli", *args], capture_output=True, text=True, timeout=600)
        return judge(case, done.returncode, done.stderr, runs)
    from llmopt.cli import main

    err = io.StringIO()
    with redirect_stderr(err), redirect_stdout(io.StringIO()):
        try:
            rc = main(args)
        except SystemExit as e:
            rc = e.code
        except Exception:  # what a user would see as a traceback
            traceback.print_exc()
            rc = 1
    return judge(case, rc, err.getvalue(), runs)


def judge(case: Case, rc: Any, err: str, runs: Path) -> tuple[str, str]:
    """Judge exit status, stderr and the runs folder as the user would meet them."""
    if case.rows is not None and rc == 0:
        splits = [f for f in Path(runs).glob("*/*/stages/*/artifacts/*.jsonl") if f.stem in ("train", "dev", "test")]
        n = sum(len(f.read_text(encoding="utf-8").splitlines()) for f in splits)
        shutil.rmtree(runs, ignore_errors=True)
        return ("accepted_valid", "") if n == case.rows else ("bad", f"loaded {n} rows, expected {case.rows}")
    lines = [ln for ln in err.splitlines() if not ln.startswith("[llmopt] ")]  # progress lines aside
    problems = ["rejected a legal input"] if case.rows is not None else []
    if rc != 2:
        problems.append(f"exit status {rc}")
    if "Traceback" in err:
        problems.append("traceback")
    if len(lines) != 1 or not lines[0].startswith("llmopt: error: "):
        problems.append(f"{len(lines)} lines, not one `llmopt: error:` line")
    else:
        problems += [f"does not match {e!r}" for e in case.expect if not re.search(e, lines[0])]
    if Path(runs).exists() and any(Path(runs).rglob("*")):
        problems.append("left a run directory")
    return ("bad", f"{'; '.join(problems)} | {err.strip()[-500:]}") if problems else ("clear_error", "")
