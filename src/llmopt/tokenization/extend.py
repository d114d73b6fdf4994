"""Extend a base model's vocabulary with domain words: add tokens, resize embeddings, init each new row as the
mean of the rows of the pieces the base tokenizer cut the word into. Old ids keep their rows, so outputs on
text made only of old tokens do not change."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from llmopt.errors import ModelError
from llmopt.tokenization.quality import LETTERS, word_pieces


def embedding_rows(model_dir: Path) -> int | None:
    """The vocabulary size in config.json (top level or text_config), or None."""
    cfg = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    return cfg.get("vocab_size") or (cfg.get("text_config") or {}).get("vocab_size")


def check_tokenizer_fits(tok: Any, model_dir: Path, field: str) -> None:
    """A tokenizer may not produce ids beyond the model's embedding rows."""
    rows = embedding_rows(model_dir)
    if rows is not None and len(tok) > rows:
        raise ModelError(f"{field}: the tokenizer in {model_dir} has {len(tok):,} tokens but the model's embedding "
                         f"has {rows:,} rows (config.json vocab_size); they do not belong together. Save the "
                         "model with the tokenizer it was trained with.")


def _normalize(tok: Any, text: str) -> str:
    norm = getattr(getattr(tok, "backend_tokenizer", None), "normalizer", None)
    return norm.normalize_str(text) if norm is not None else text


def candidate_words(tok: Any, texts: list[str], n: int, min_count: int = 2) -> list[dict[str, Any]]:
    """The n domain words that save the most tokens as one token: count × (pieces − 1), words the base
    tokenizer cuts into ≥ 2 pieces."""
    counts = Counter(w for t in texts for w in LETTERS.findall(_normalize(tok, t)))
    vocab = tok.get_vocab()
    words = [w for w, c in counts.items() if c >= min_count and w not in vocab]
    rows = [{"word": w, "count": counts[w], "pieces": p, "saved": counts[w] * (len(p) - 1)}
            for w, p in zip(words, word_pieces(tok, words)) if len(p) >= 2]
    rows.sort(key=lambda r: (-r["saved"], r["word"]))
    return rows[:n]


def leading_space(tok: Any) -> bool:
    """True when a mid-sentence word's first token carries its space (Ġword, ▁word) rather than a plain word."""
    ids = tok("a b", add_special_tokens=False)["input_ids"]
    return len(ids) >= 2 and tok.decode(ids[1:]).startswith(" ")


def load_for_extend(model_dir: Path, allow_pickle: bool = False, field: str = "base") -> tuple[Any, Any]:
    """(model with its own head — the class in config.json's architectures —, its tokenizer), or a clear error
    when it is an export without input embeddings, or its tokenizer does not fit its embedding."""
    import transformers

    from llmopt.models import check_model_dir, load_tokenizer

    model_dir = Path(model_dir)
    if (model_dir / "model.onnx").is_file() or model_dir.suffix == ".gguf" or any(model_dir.glob("*.gguf")):
        raise ModelError(f"{field}: {model_dir} is an exported model (ONNX / GGUF) with no input embeddings to "
                         "resize. Extend the PyTorch model folder it was exported from.")
    check_model_dir(model_dir, need_tokenizer=True, allow_pickle=allow_pickle)
    tok = load_tokenizer(model_dir)
    check_tokenizer_fits(tok, model_dir, field)
    cfg = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    arch = (cfg.get("architectures") or [None])[0]
    cls = getattr(transformers, arch, None) if arch else None
    cls = cls if isinstance(cls, type) and hasattr(cls, "from_pretrained") else transformers.AutoModel
    prev = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        model = cls.from_pretrained(str(model_dir), trust_remote_code=False, use_safetensors=not allow_pickle or None)
    except (OSError, ValueError, RuntimeError) as e:
        raise ModelError(f"{field}: {model_dir}: the model does not load ({type(e).__name__}: "
                         f"{str(e).splitlines()[0][:200]}).") from None
    finally:
        transformers.logging.set_verbosity(prev)
    try:
        emb = model.get_input_embeddings()
    except (NotImplementedError, AttributeError):
        emb = None
    if emb is None or not hasattr(emb, "weight"):
        raise ModelError(f"{field}: {model_dir} ({type(model).__name__}) has no input embeddings to resize; "
                         "extend a model that reads token ids.")
    return model.eval(), tok


def extend_vocabulary(model: Any, tok: Any, texts: list[str], n: int, min_count: int = 2) -> dict[str, Any]:
    """Add up to n domain tokens to `tok` and rows to `model` (in place); each new input row (and output row when
    the LM head is untied) is the mean of its old pieces' rows. Returns what was added."""
    import torch
    from tokenizers import AddedToken

    old_len, old_rows = len(tok), model.get_input_embeddings().weight.shape[0]
    rows = candidate_words(tok, texts, n, min_count)
    space = leading_space(tok)
    piece_ids = [tok.convert_tokens_to_ids(r["pieces"]) for r in rows]
    # a byte-level / metaspace tokenizer puts the space inside a word's first token: so does the new token, which
    # then also starts a longer word (" thriller|s", WordPiece-style longest match); a plain word is single_word:
    # never matched inside a longer one. (single_word would never match " word": the letter before the space.)
    added = tok.add_tokens([AddedToken((" " if space else "") + r["word"], single_word=not space,
                                       normalized=not space) for r in rows])
    new_ids = tok.convert_tokens_to_ids([(" " if space else "") + r["word"] for r in rows])
    out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    tied = out is not None and out.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    model.resize_token_embeddings(max(len(tok), old_rows), mean_resizing=False)
    with torch.no_grad():
        emb = model.get_input_embeddings().weight
        head = model.get_output_embeddings() if out is not None else None
        for nid, pids in zip(new_ids, piece_ids):
            emb[nid] = emb[pids].mean(0)
            if head is not None and not tied:
                head.weight[nid] = head.weight[pids].mean(0)
            if head is not None and getattr(head, "bias", None) is not None:
                head.bias[nid] = head.bias[pids].mean(0)
    return {"added": added, "old_vocab": old_len, "new_vocab": len(tok), "old_rows": old_rows,
            "new_rows": model.get_input_embeddings().weight.shape[0], "tied_head": tied,
            "tokens": [{**r, "id": i} for r, i in zip(rows, new_ids)]}
