"""prune stage: drop layers, FFN neurons and unused vocabulary (physically), or unstructured sparsity; then recover."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from llmopt.stages.base import ModelRef, StageConfig, StageContext, StageRef, StageResult, model_ref_str
from llmopt.training.config import KDConfig, TrainConfig


class PruneConfig(StageConfig):
    """Prune the model of an earlier stage; optionally recover with a short (distilled) fine-tune."""

    type: Literal["prune"] = "prune"
    model: ModelRef = Field(description="earlier stage id or model folder to prune")
    data: StageRef = "data"
    teacher: ModelRef | None = Field(None, description="recovery distils from this model (logits cached); else labels only")
    keep_layers: int | None = Field(None, ge=1, description="drop the layers whose removal costs least dev loss")
    ffn_keep: float | None = Field(None, gt=0, le=1, description="share of FFN neurons kept per layer (by importance)")
    vocab_trim: bool = Field(False, description="keep only tokens used by `vocab_splits` (+ specials, characters)")
    vocab_splits: list[Literal["train", "dev", "test"]] = ["train", "dev"]
    vocab_keep_chars: Literal["ascii", "all", "none"] = Field(
        "ascii", description="single-character tokens kept so unseen words still split into pieces")
    sparsity: float | None = Field(None, gt=0, lt=1, description="unstructured global magnitude sparsity (cubic schedule)")
    sparsity_start: float = Field(0.0, ge=0, lt=1, description="share of recovery steps before pruning starts")
    sparsity_end: float = Field(0.7, gt=0, le=1, description="share of recovery steps where the target is reached")
    sparsity_every: int = Field(10, ge=1, description="steps between mask updates")
    importance_rows: int = Field(512, ge=8, description="train rows for gradient importance")
    recover: bool = Field(True, description="fine-tune after structured pruning (always on with sparsity)")
    kd: KDConfig = KDConfig()
    train: TrainConfig = TrainConfig(learning_rate=5e-5, epochs=1)

    @model_validator(mode="after")
    def _something(self) -> "PruneConfig":
        if not (self.keep_layers or self.ffn_keep or self.vocab_trim or self.sparsity):
            raise ValueError("nothing to prune: set keep_layers, ffn_keep, vocab_trim or sparsity")
        if self.sparsity and self.sparsity_end <= self.sparsity_start:
            raise ValueError("sparsity_end must come after sparsity_start")
        return self



def run(cfg: PruneConfig, ctx: StageContext) -> StageResult:
    """Remove layers / FFN neurons / unused vocabulary physically (or zero weights on a cubic schedule), recover
    with the one trainer (distilled from `teacher` when given), and save the pruned model to artifacts/model."""
    import numpy as np

    from llmopt.compression import sparsity as sp
    from llmopt.compression import structured
    from llmopt.compression.distillation import RUN_CACHE, student_from_teacher, teacher_logits
    from llmopt.compression.vocab import trim_vocab
    from llmopt.data.artifact import load_data_artifact
    from llmopt.fsutil import atomic_write_jsonl
    from llmopt.models import load_classifier, load_tokenizer, read_inference_settings, save_model, weights_size_bytes
    from llmopt.training.checkpoints import last_good_checkpoint
    from llmopt.training.config import with_model_settings
    from llmopt.training.trainer import train_classifier

    data = load_data_artifact(ctx.artifacts_of(cfg.data))
    src = ctx.model_dir(cfg.model)
    inference = read_inference_settings(src)  # what the pruned model keeps unless recovery trains it otherwise
    train_cfg = with_model_settings(cfg.train, inference)  # unset: as the parent was trained
    model, tok = load_classifier(src, allow_pickle=ctx.allow_pickle), load_tokenizer(src)
    params_before = int(sum(p.numel() for p in model.parameters()))
    texts, labels = [r["text"] for r in data.train], data.ids(data.train)
    dev_texts, dev_y = [r["text"] for r in data.dev], data.ids(data.dev)
    rng = np.random.default_rng(ctx.seed)
    sample = rng.permutation(len(texts))[: cfg.importance_rows]
    from llmopt.training.tokenize import max_length_for

    max_length = max_length_for(train_cfg.max_length, tok, texts, model.config)  # for importance scoring
    m: dict = {"parent": model_ref_str(cfg.model), "params_before": params_before, "config_before": _shape(model.config)}

    if cfg.keep_layers or cfg.ffn_keep:
        heads, ffn = structured.importance(model, tok, [texts[i] for i in sample], [labels[i] for i in sample],
                                           max_length)
        m["head_importance"] = np.round(heads / max(heads.max(), 1e-12), 4).tolist()
        m["heads_note"] = ("heads are ranked (Michel et al. 2019) but not removed: transformers 5 has no "
                           "prune_heads/pruned_heads, and BertConfig cannot describe fewer heads of the same size")
        if cfg.keep_layers and cfg.keep_layers < model.config.num_hidden_layers:
            losses = structured.layer_drop_losses(model, tok, dev_texts[:256], dev_y[:256], max_length)
            keep = structured.choose_layers(losses, cfg.keep_layers)
            model = student_from_teacher(model, keep)
            ffn = [ffn[i] for i in keep]
            m.update(layer_drop_dev_loss=losses, layers_kept=keep)
        if cfg.ffn_keep:
            width = max(1, int(round(cfg.ffn_keep * model.config.intermediate_size)))
            structured.prune_ffn(model, width, ffn)
            m["ffn_width"] = width
    if cfg.vocab_trim:
        corpus = [r["text"] for s in cfg.vocab_splits for r in data.split(s)]
        model, tok, info = trim_vocab(model, tok, corpus, cfg.vocab_keep_chars)
        m.update(info, vocab_splits=cfg.vocab_splits)

    callbacks, pruner = [], None
    if cfg.sparsity:
        pruner = sp.GradualPruning(model, cfg.sparsity, cfg.sparsity_start, cfg.sparsity_end, cfg.sparsity_every)
        callbacks.append(pruner)
    if cfg.recover or cfg.sparsity:
        logits = None
        if cfg.teacher:
            t_dir = ctx.model_dir(cfg.teacher)
            logits = teacher_logits(t_dir, texts, max_length=train_cfg.max_length, truncation=train_cfg.truncation,
                                    cache=ctx.run_dir / RUN_CACHE, allow_pickle=ctx.allow_pickle)
        out = train_classifier(
            model, tok, train=(texts, labels), dev=(dev_texts, dev_y), num_labels=len(data.labels), cfg=train_cfg,
            seed=ctx.seed, work_dir=ctx.stage_dir, resume_from=last_good_checkpoint(ctx.stage_dir / "checkpoints"),
            teacher_logits=logits, kd=cfg.kd, callbacks=callbacks, keep_best=pruner is None,
        )
        model, inference = out.model, out.inference
        if pruner is not None:
            pruner.finalize(model)
        atomic_write_jsonl(ctx.out_dir / "log_history.jsonl", out.trainer.state.log_history)
        dev = out.trainer.evaluate()
        m.update(out.metrics, dev_accuracy=dev.get("eval_accuracy"), dev_macro_f1=dev.get("eval_macro_f1"))
    if pruner is not None:
        m.update(target_sparsity=cfg.sparsity, measured_sparsity=sp.measured_sparsity(model),
                 sparsity_schedule=pruner.history)
    save_model(model, tok, ctx.out_dir / "model", inference=inference or None)
    out = ctx.out_dir / "model"
    m.update(params_after=int(sum(p.numel() for p in model.parameters())), config_after=_shape(model.config),
             weights_bytes_before=weights_size_bytes(src), weights_bytes_after=weights_size_bytes(out))
    if pruner is not None:
        m["compressed_bytes_after"] = _zlib_size(out)
        m["sparsity_note"] = ("unstructured zeros stay in the dense tensors: the safetensors file is as large as "
                              "before and dense CPU kernels are no faster (see the evaluate stage's timings); "
                              "only a compressor (compressed_bytes_after, zlib) or sparse kernels benefit")
    return StageResult(m)


def _shape(cfg) -> dict:
    return {k: getattr(cfg, k, None) for k in ("num_hidden_layers", "hidden_size", "num_attention_heads",
                                               "intermediate_size", "vocab_size")}


def _zlib_size(folder) -> int:
    import zlib

    return sum(len(zlib.compress(p.read_bytes(), 6)) for p in folder.glob("*.safetensors"))


def section(sid: str, m: dict, doc: Any) -> None:
    """Shape before and after, what was removed and why, recovery training and its curve."""
    from llmopt.report.render import _pct, short_path, training_section

    doc.h(2, f"Pruning ({sid})")
    b, a = m["config_before"], m["config_after"]
    doc.p(f"Starting model: {short_path(m['parent'])}; parameters {m['params_before']:,} → {m['params_after']:,} "
          f"({m['params_before'] / max(m['params_after'], 1):.1f}× fewer).")
    doc.table(["", "layers", "hidden", "heads", "FFN width", "vocabulary", "parameters", "weights MB"],
              [["before", *(f"{b[k]:,}" for k in ("num_hidden_layers", "hidden_size", "num_attention_heads",
                                                  "intermediate_size", "vocab_size")),
                f"{m['params_before']:,}", f"{m['weights_bytes_before'] / 2**20:.1f}"],
               ["after", *(f"{a[k]:,}" for k in ("num_hidden_layers", "hidden_size", "num_attention_heads",
                                                 "intermediate_size", "vocab_size")),
                f"{m['params_after']:,}", f"{m['weights_bytes_after'] / 2**20:.1f}"]])
    said = []
    if m.get("layers_kept") is not None:
        said.append(f"Layers kept: {', '.join(map(str, m['layers_kept']))} of {b['num_hidden_layers']} (the ones whose "
                    "removal cost most dev loss).")
    else:
        said.append(f"Layers: all {a['num_hidden_layers']} kept.")
    if m.get("ffn_width"):
        said.append(f"FFN width: {m['ffn_width']:,} of {b['intermediate_size']:,} neurons kept per layer, by "
                    "gradient importance.")
    if m.get("vocab_after"):
        said.append(f"Vocabulary: {m.get('vocab_before', b['vocab_size']):,} → {m['vocab_after']:,} tokens, trimmed "
                    f"to those used by the {'/'.join(m.get('vocab_splits', []))} split(s).")
    if m.get("heads_note"):
        said.append(f"Attention heads: {m['heads_note']}.")
    if m.get("target_sparsity"):
        said.append(f"Unstructured sparsity: target {_pct(m['target_sparsity'])}%, measured "
                    f"{_pct(m['measured_sparsity'])}%. {m.get('sparsity_note', '')}.")
    if m.get("dev_accuracy") is not None:
        said.append(f"After recovery: dev accuracy {_pct(m['dev_accuracy'])}%, macro-F1 {_pct(m['dev_macro_f1'])}%.")
    doc.p(" ".join(said))
    training_section(sid, m, doc)
