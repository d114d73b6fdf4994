"""tokenizer stage: train a subword tokenizer on domain text, or extend a base model's vocabulary, and measure
both against the base tokenizer on held-out text."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from llmopt.stages.base import InputFile, ModelRef, StageConfig, StageContext, StageRef, StageResult, model_ref_str
from llmopt.tokenization.config import TokenizerTrainConfig


class TokenizerConfig(StageConfig):
    """mode train: a BPE / Unigram / WordPiece tokenizer (artifacts/tokenizer); mode extend: the base model with
    its vocabulary grown by domain words (artifacts/model, a model any later stage takes)."""

    type: Literal["tokenizer"] = "tokenizer"
    mode: Literal["train", "extend"] = "train"
    data: StageRef | None = Field("data", description="data stage: train split = corpus, `heldout` split = held out")
    texts: list[InputFile] = Field([], description="JSONL (text) or .txt files of extra unlabelled domain text")
    base: ModelRef | None = Field(None, description="model whose tokenizer is the comparison (train) or is extended")
    heldout: Literal["dev", "test"] = Field("dev", description="the data stage's split the quality is measured on")
    train: TokenizerTrainConfig = TokenizerTrainConfig()
    add_tokens: int = Field(1000, ge=1, description="extend: how many domain words become tokens (at most)")
    min_count: int = Field(2, ge=1, description="extend / worst words: a word must occur this often")
    worst_words: int = Field(20, ge=0, description="list the base tokenizer's worst-split domain words")
    student_layers: list[int] | None = Field(None, min_length=1, description="train: also write artifacts/model, "
                                             "the base's layers with the new vocabulary (a distill student_model)")

    @model_validator(mode="after")
    def _needs(self) -> "TokenizerConfig":
        if self.mode == "extend" and self.base is None:
            raise ValueError("base: mode 'extend' needs the model whose vocabulary it extends")
        if self.student_layers is not None and (self.mode != "train" or self.base is None):
            raise ValueError("student_layers: needs mode 'train' and a base model whose layers it copies")
        if self.data is None and not self.texts:
            raise ValueError("data: give a data stage or texts: files to learn from")
        return self


def _corpus(cfg: TokenizerConfig, ctx: StageContext) -> tuple[list[str], list[str]]:
    """(training text, held-out text): the data stage's train / held-out split plus the extra files; without a
    data stage the last tenth of the files' lines is held out."""
    from pathlib import Path

    from llmopt.compression.distillation import read_transfer_texts
    from llmopt.data.artifact import load_data_artifact
    from llmopt.errors import DataError

    extra = [t for p in cfg.texts for t in read_transfer_texts(Path(p)) if t.strip()]
    if cfg.data is not None:
        data = load_data_artifact(ctx.artifacts_of(cfg.data))
        train, held = [t for t in data.texts("train") if t.strip()] + extra, data.texts(cfg.heldout)
    else:
        cut = len(extra) - len(extra) // 10
        train, held = extra[:cut], extra[cut:]
    if not train:
        raise DataError(f"tokenizer '{cfg.id}': data / texts: the training corpus is empty (no non-blank text in "
                        f"{'the data stage' + chr(39) + 's train split' if cfg.data else ', '.join(cfg.texts)}). "
                        "Give it text to learn from.")
    return train, held or train[-max(1, len(train) // 10):]


def run(cfg: TokenizerConfig, ctx: StageContext) -> StageResult:
    """Train (or extend) the tokenizer, save it, and report its quality beside the base tokenizer's."""
    from llmopt.fsutil import atomic_write_bytes
    from llmopt.models import display_path, load_tokenizer, read_inference_settings, resolve_model_ref, save_model
    from llmopt.tokenization.extend import check_tokenizer_fits, extend_vocabulary, load_for_extend
    from llmopt.tokenization.quality import quality, word_pieces, worst_split_words
    from llmopt.tokenization.train import save_tokenizer, train_tokenizer

    train_texts, held = _corpus(cfg, ctx)
    held_from = f"the data stage's {cfg.heldout} split" if cfg.data else "the last tenth of texts:"
    metrics: dict[str, Any] = {"mode": cfg.mode, "train_texts": len(train_texts), "heldout_texts": len(held),
                               "train_chars": sum(map(len, train_texts)), "heldout_split": held_from}
    base_dir = base_tok = None
    if cfg.base is not None:
        base_dir = resolve_model_ref(model_ref_str(cfg.base), ctx.stage_dirs)
        metrics["base"] = model_ref_str(cfg.base)
        metrics["base_path"] = display_path(base_dir)
    if cfg.mode == "train":
        if base_dir is not None:
            base_tok = load_tokenizer(ctx.model_dir(cfg.base))
            check_tokenizer_fits(base_tok, base_dir, f"tokenizer '{cfg.id}': base")
        tok = train_tokenizer(train_texts, cfg.train, where=f"tokenizer '{cfg.id}': train")
        folder = save_tokenizer(tok, cfg.train.special_tokens, ctx.out_dir / "tokenizer")
        ours = load_tokenizer(folder)  # measured as a later stage will load it
        metrics.update(settings=cfg.train.model_dump(), quality=quality(ours, held))
        if cfg.student_layers:  # the base's layers under the new vocabulary, embeddings carried over
            from llmopt.models import load_classifier
            from llmopt.tokenization.transfer import small_vocab_student

            base = load_classifier(ctx.model_dir(cfg.base), allow_pickle=ctx.allow_pickle)
            student, how = small_vocab_student(base, cfg.student_layers, base_tok, ours)
            save_model(student, ours, ctx.out_dir / "model", inference=read_inference_settings(base_dir) or None)
            metrics.update(student_layers=cfg.student_layers, embedding_init=how,
                           params=int(sum(p.numel() for p in student.parameters())),
                           base_params=int(sum(p.numel() for p in base.parameters())))
    else:
        model, ours = load_for_extend(base_dir, allow_pickle=ctx.allow_pickle, field=f"tokenizer '{cfg.id}': base")
        base_tok = load_tokenizer(base_dir)
        info = extend_vocabulary(model, ours, train_texts, cfg.add_tokens, cfg.min_count)
        save_model(model, ours, ctx.out_dir / "model", inference=read_inference_settings(base_dir) or None)
        if (base_dir / "llmopt_instruction.json").is_file():  # a causal LM keeps the prompt format it was trained with
            atomic_write_bytes(ctx.out_dir / "model" / "llmopt_instruction.json",
                               (base_dir / "llmopt_instruction.json").read_bytes())
        metrics.update(extend={k: v for k, v in info.items() if k != "tokens"}, added_tokens=info["tokens"][:50],
                       quality=quality(ours, held), params=int(sum(p.numel() for p in model.parameters())))
    if base_tok is not None:
        metrics["base_quality"] = quality(base_tok, held)
        worst = worst_split_words(base_tok, held, cfg.worst_words, cfg.min_count)
        for row, mine in zip(worst, word_pieces(ours, [r["word"] for r in worst])):
            row["ours"] = mine
        metrics["worst_split_words"] = worst
    return StageResult(metrics)


def section(sid: str, m: dict, doc: Any) -> None:
    """The tokenizer's quality beside the base tokenizer's on held-out text, and the words the base splits worst."""
    doc.h(2, f"Tokenizer ({sid})")
    q, b = m["quality"], m.get("base_quality")
    if m["mode"] == "train":
        s = m["settings"]
        doc.p(f"Trained a {s['algorithm']} tokenizer of {q['vocab_size']:,} tokens on {m['train_texts']:,} texts "
              f"({m['train_chars'] / 1e6:.2f} M characters): NFKC {'on' if s['nfkc'] else 'off'}, lower-casing "
              f"{'on' if s['lowercase'] else 'off'}, punctuation split {'on' if s['split_punctuation'] else 'off'}, "
              f"digit split {'on' if s['split_digits'] else 'off'}, bytes: {s['bytes']}.")
        if m.get("student_layers"):
            how = m["embedding_init"]
            doc.p(f"Student model: layers {m['student_layers']} of {m['base']} under this vocabulary "
                  f"({m['params']:,} parameters, the base has {m['base_params']:,}); embedding rows from the base: "
                  f"{how['same_piece']:,} same piece, {how['mean_of_pieces']:,} mean of the base's pieces, "
                  f"{how['special']:,} special tokens.")
    else:
        e = m["extend"]
        doc.p(f"Extended {m['base']} by {e['added']:,} domain tokens ({e['old_vocab']:,} → {e['new_vocab']:,}); "
              "each new embedding row is the mean of the rows of the pieces the base tokenizer cut the word into"
              + ("; the LM head is tied to it." if e["tied_head"] else "."))
    rows = [["ours", q]] + ([[f"base ({m['base']})", b]] if b else [])
    doc.p(f"Held-out text: {m['heldout_texts']:,} texts, {m['heldout_split']} ({q['words']:,} words).")
    doc.table(["tokenizer", "vocab", "tokens / word", "words in ≥2 pieces %", "unknown %", "vocab used %"],
              [[name, f"{r['vocab_size']:,}", f"{r['fertility']:.3f}", f"{100 * r['split_share']:.1f}",
                f"{100 * r['unk_rate']:.2f}", f"{100 * r['vocab_utilization']:.1f}"] for name, r in rows])
    if m.get("worst_split_words"):
        doc.table(["word", "count", "base pieces", "ours"],
                  [[w["word"], str(w["count"]), " ".join(w["tokens"]), " ".join(w.get("ours", []))]
                   for w in m["worst_split_words"][:10]])
