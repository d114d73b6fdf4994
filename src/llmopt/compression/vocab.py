"""Vocabulary trimming: keep the WordPiece tokens a task corpus uses, remap the embedding table and tokenizer.

For MiniLM the 30,522 × 384 word-embedding table is half the model; a sentiment corpus uses a third of it.
Greedy longest-match WordPiece segments a word the same way as long as every piece it used is kept, so
text made of kept tokens gets bit-identical logits. Single characters (and ##c) are kept too, so unseen
words still split into pieces instead of collapsing to [UNK]: the ASCII ones by default (a corpus's own
non-ASCII characters are kept anyway), or every single-character token (~2,000 in BERT's vocabulary).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from llmopt.errors import ModelError


def used_token_ids(tokenizer: Any, texts: list[str], keep_chars: str = "ascii") -> list[int]:
    """Sorted ids of every token the texts produce, the special tokens, and single characters
    (`keep_chars`: "ascii", "all" or "none")."""
    keep: set[int] = set(tokenizer.all_special_ids)
    for start in range(0, len(texts), 1000):
        for ids in tokenizer(texts[start : start + 1000], add_special_tokens=False)["input_ids"]:
            keep.update(ids)
    if keep_chars not in ("ascii", "all", "none"):
        raise ValueError(f"keep_chars must be 'ascii', 'all' or 'none', not {keep_chars!r}")
    if keep_chars != "none":
        keep.update(i for t, i in tokenizer.get_vocab().items()
                    if len(c := t.removeprefix("##")) == 1 and (keep_chars == "all" or c.isascii()))
    return sorted(keep)


def _remap_json(tok_json: dict, keep: list[int]) -> tuple[dict, dict[int, int]]:
    model = tok_json.get("model", {})
    if model.get("type") != "WordPiece":
        raise ModelError(f"vocabulary trimming supports WordPiece tokenizers (BERT family), not {model.get('type')}.")
    by_id = {i: t for t, i in model["vocab"].items()}
    new_of = {old: new for new, old in enumerate(keep)}
    model["vocab"] = {by_id[old]: new for old, new in new_of.items()}
    for added in tok_json.get("added_tokens", []):
        added["id"] = new_of[added["id"]]
    post = tok_json.get("post_processor") or {}
    procs = post.get("processors", [post]) if post.get("type") == "Sequence" else [post]
    for p in procs:
        if p.get("type") == "BertProcessing":
            for key in ("sep", "cls"):
                p[key][1] = new_of[p[key][1]]
        elif p.get("type") == "TemplateProcessing":
            for spec in p.get("special_tokens", {}).values():
                spec["ids"] = [new_of[i] for i in spec["ids"]]
    return tok_json, new_of


def trim_tokenizer(tokenizer: Any, keep: list[int]) -> tuple[Any, dict[int, int]]:
    """A tokenizer whose vocabulary is `keep` (old ids, sorted), written and reloaded via save_pretrained."""
    from llmopt.models import load_tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        tokenizer.save_pretrained(str(d))
        tok_json, new_of = _remap_json(json.loads(tokenizer.backend_tokenizer.to_str()), keep)
        (d / "tokenizer.json").write_text(json.dumps(tok_json, ensure_ascii=False), encoding="utf-8")
        if (d / "vocab.txt").is_file():
            inv = sorted(tok_json["model"]["vocab"].items(), key=lambda kv: kv[1])
            (d / "vocab.txt").write_text("".join(t + "\n" for t, _ in inv), encoding="utf-8")
        cfg_path = d / "tokenizer_config.json"
        if cfg_path.is_file():
            cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
            if "added_tokens_decoder" in cfg:
                cfg["added_tokens_decoder"] = {str(new_of[int(k)]): v for k, v in cfg["added_tokens_decoder"].items()}
            cfg_path.write_text(json.dumps(cfg, indent=2), encoding="utf-8")
        return load_tokenizer(d), new_of


def trim_vocab(model: Any, tokenizer: Any, texts: list[str], keep_chars: str = "ascii") -> tuple[Any, Any, dict]:
    """Shrink the word-embedding table to the tokens `texts` use; returns (model, tokenizer, info)."""
    import torch

    keep = used_token_ids(tokenizer, texts, keep_chars)
    new_tok, new_of = trim_tokenizer(tokenizer, keep)
    old = model.get_input_embeddings()
    pad = model.config.pad_token_id
    emb = torch.nn.Embedding(len(keep), old.weight.shape[1], padding_idx=new_of.get(pad) if pad is not None else None)
    with torch.no_grad():
        emb.weight.copy_(old.weight[torch.tensor(keep)])
    model.set_input_embeddings(emb)
    before = model.config.vocab_size
    model.config.vocab_size = len(keep)
    if pad is not None:
        model.config.pad_token_id = new_of[pad]
    return model, new_tok, {"vocab_before": int(before), "vocab_after": len(keep),
                            "embedding_params_removed": int((before - len(keep)) * old.weight.shape[1])}
