"""finetune stage: the one trainer on a classification data stage (an encoder with a new head), a causal LM on
plain text (task: causal_lm) or chat examples (task: sft), full or LoRA, or an encoder's masked-LM continued
pretraining on plain text (task: mlm); the best dev checkpoint is kept."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from llmopt.stages.base import BuiltinModel, InputFile, ModelRef, StageConfig, StageContext, StageRef, StageResult
from llmopt.training.config import InstructionConfig, LoraConfig, TrainConfig

LM_TASKS = ("causal_lm", "sft")
TEXT_TASKS = ("causal_lm", "sft", "mlm")  # trained on text (a file or a data stage's texts), not on labels
# training defaults of the LM tasks, where the recipe leaves them unset
LM_TRAIN_DEFAULTS = {"metric_for_best": "loss", "max_length": 512, "batch_size": 8, "eval_batch_size": 8}
LR_LORA, LR_FULL = 2e-4, 5e-5
MLM_TRAIN_DEFAULTS = {"metric_for_best": "loss", "learning_rate": 5e-5}  # the rest: TrainConfig's


class FinetuneConfig(StageConfig):
    """Fine-tune a classifier (encoder + new head) or a causal LM (task: causal_lm / sft, full or LoRA).

    LM tasks: model defaults to `builtin: smollm2-135m`; train defaults to learning_rate 2e-4 with LoRA and 5e-5
    for a full fine-tune, metric_for_best loss (early stopping on held-out loss), max_length 512 (SFT examples),
    batch_size 8.

    task mlm: masked-LM continued pretraining of an encoder (model defaults to `builtin: minilm`) on plain text;
    train defaults to learning_rate 5e-5 and metric_for_best loss, max_length = tokens per chunk. The result,
    artifacts/model, is an encoder base for a later finetune or distill. mlm and causal_lm also measure held-out
    domain perplexity (pseudo-perplexity for mlm) and, with `general_text`, general-text perplexity before and
    after training, with 95% intervals over documents.
    """

    type: Literal["finetune"] = "finetune"
    task: Literal["classification", "causal_lm", "sft", "mlm"] = "classification"
    data: StageRef | None = Field("data", description="data stage; for LM tasks optional when `text` is given")
    model: ModelRef = BuiltinModel(builtin="minilm")
    text: InputFile | None = Field(None, description="causal_lm / mlm: .txt (blank-line separated) or .jsonl {text}; "
                                                     "sft: .jsonl {prompt, response} or {messages}")
    dev_file: InputFile | None = Field(None, description="held-out examples, same format as `text`")
    dev_fraction: float = Field(0.1, gt=0, lt=1, description="without dev_file: seeded share of `text` held out")
    block_size: int = Field(512, ge=8, description="causal_lm: tokens per packed training block")
    lora: LoraConfig | None = Field(None, description="LoRA adapters; null: full fine-tune")
    merge: bool = Field(True, description="LoRA: write the merged model to artifacts/model (quantize and "
                                          "evaluate need it); false writes artifacts/adapter only")
    instruction: InstructionConfig | None = Field(None, description="sft from a data stage: the prompt template "
                                                                    "and label words (default template if unset)")
    general_text: InputFile | None = Field(None, description="mlm / causal_lm: general-domain text (.txt or .jsonl "
                                           "{text}) whose perplexity is measured before and after (forgetting)")
    domain_eval: bool | None = Field(None, description="measure domain (dev) and general perplexity before/after; "
                                     "null: on for mlm, for causal_lm only with general_text")
    eval_max_tokens: int | None = Field(10000, ge=16, description="domain_eval: the first documents up to about this "
                                        "many tokens of each corpus (null: all)")
    train: TrainConfig = TrainConfig()

    @model_validator(mode="before")
    @classmethod
    def _lm_defaults(cls, raw: Any) -> Any:
        if isinstance(raw, dict) and raw.get("task") == "mlm":
            raw = dict(raw)
            if "data" not in raw and raw.get("text") is not None:
                raw["data"] = None
            if raw.get("train") is None or isinstance(raw.get("train"), dict):
                raw["train"] = {**MLM_TRAIN_DEFAULTS, **(raw.get("train") or {})}
            return raw
        if not isinstance(raw, dict) or raw.get("task") not in LM_TASKS:
            return raw
        raw = dict(raw)
        raw.setdefault("model", {"builtin": "smollm2-135m"})
        if "data" not in raw and raw.get("text") is not None:
            raw["data"] = None
        train = raw.get("train")
        if train is None or isinstance(train, dict):
            lr = LR_LORA if raw.get("lora") is not None else LR_FULL
            raw["train"] = {"learning_rate": lr, **LM_TRAIN_DEFAULTS, **(train or {})}
        return raw

    @model_validator(mode="after")
    def _fields_fit_the_task(self) -> "FinetuneConfig":
        lm_only = [f for f in ("text", "dev_file", "lora", "instruction", "general_text", "domain_eval")
                   if getattr(self, f) is not None]
        if self.task == "classification":
            if lm_only:
                raise ValueError(f"{', '.join(lm_only)}: only for task causal_lm or sft (task is classification)")
            if self.data is None:
                raise ValueError("data: task classification needs a data stage")
            return self
        if (self.text is None) == (self.data is None):
            raise ValueError(f"task {self.task}: give either text (a file) or data (a data stage id), not "
                             + ("both" if self.text else "neither"))
        if self.dev_file is not None and self.text is None:
            raise ValueError("dev_file: only with text (a data stage brings its own dev split)")
        if self.instruction is not None and (self.task != "sft" or self.data is None):
            raise ValueError("instruction: only for task sft from a data stage")
        if self.task == "mlm" and self.lora is not None:
            raise ValueError("lora: task mlm trains the whole encoder; remove lora")
        if self.task == "sft" and (self.general_text is not None or self.domain_eval is not None):
            raise ValueError("general_text / domain_eval: only for task causal_lm or mlm")
        if self.train.metric_for_best != "loss":
            raise ValueError(f"train.metric_for_best: task {self.task} early-stops on held-out loss; set it to loss")
        if self.train.learning_rate == "auto" or self.train.sweep:
            raise ValueError(f"train.{'learning_rate: auto' if self.train.learning_rate == 'auto' else 'sweep'}: only "
                             f"task classification sweeps its training block (task is {self.task}); give a number")
        return self


def run(cfg: FinetuneConfig, ctx: StageContext) -> StageResult:
    """Classification: train `cfg.model` with a new head on the data stage's train split, select on dev, save the
    best model to artifacts/model. causal_lm / sft: train the causal LM (full or LoRA) on packed text or chat
    examples, early-stop on dev loss, save artifacts/model (merged) and, with LoRA, artifacts/adapter. mlm: masked-LM
    continued pretraining of the encoder on text chunks, early-stop on dev MLM loss, save artifacts/model (an
    encoder base). mlm / causal_lm: domain and general perplexity before and after (`domain_eval`)."""
    if cfg.task == "mlm":
        return StageResult(_run_mlm(cfg, ctx))
    if cfg.task in LM_TASKS:
        return StageResult(_run_lm(cfg, ctx))
    from llmopt.data.artifact import load_data_artifact
    from llmopt.fsutil import atomic_write_jsonl
    from llmopt.models import display_path, load_classifier, load_tokenizer, save_model
    from llmopt.eval import trials
    from llmopt.training import sweep
    from llmopt.training.checkpoints import last_good_checkpoint
    from llmopt.training.trainer import train_classifier

    data = load_data_artifact(ctx.artifacts_of(cfg.data))
    base = ctx.model_dir(cfg.model)
    tokenizer = load_tokenizer(base)
    model = load_classifier(base, labels=data.labels, allow_pickle=ctx.allow_pickle, ignore_mismatched_sizes=True)
    train, dev_split = (data.texts("train"), data.ids(data.train)), (data.texts("dev"), data.ids(data.dev))
    search, train_cfg = None, cfg.train
    if sweep.is_sweep(cfg.train):  # learning_rate: auto / sweep: short trials chosen on dev, then the full training
        search = sweep.Sweep(cfg.train, model, tokenizer, train=train, dev=dev_split, num_labels=len(data.labels),
                             seed=ctx.seed, stage_dir=ctx.stage_dir, score=trials.score_dev)
        train_cfg = search.run()
    resume = last_good_checkpoint(ctx.stage_dir / "checkpoints")
    out = train_classifier(model, tokenizer, train=train, dev=dev_split, num_labels=len(data.labels), cfg=train_cfg,
                           seed=ctx.seed, work_dir=ctx.stage_dir, resume_from=resume)
    # the best checkpoint is loaded at the end of training; its dev scores are in the history already
    history = out.trainer.state.log_history
    evals = [h for h in history if "eval_loss" in h]
    best_step = out.trainer.state.best_global_step
    dev = next((h for h in evals if h.get("step") == best_step), evals[-1] if evals else {})
    save_model(out.model, tokenizer, ctx.out_dir / "model", inference=out.inference)
    atomic_write_jsonl(ctx.out_dir / "log_history.jsonl", history)
    if search is not None:
        gain = trials.compare_fixed(search, data, ctx.out_dir / "model")
        out.metrics["lr_search"] = search.summary(out.metrics.get("train_runtime_s"), gain)
        out.metrics["learning_rate"] = train_cfg.learning_rate
    return StageResult({
        **out.metrics,
        "base_model": display_path(base),
        "labels": data.labels,
        "n_train": len(data.train),
        "n_dev": len(data.dev),
        "dev_accuracy": dev.get("eval_accuracy"),
        "dev_macro_f1": dev.get("eval_macro_f1"),
        "dev_loss": dev.get("eval_loss"),
        "resumed_from": str(resume) if resume else None,
    })


def _documents(cfg: FinetuneConfig, ctx: StageContext) -> tuple[list[str], list[str], str]:
    """Train and dev documents of a text task (causal_lm, mlm): a data stage's split texts, or `text` (read as
    causal_lm reads it) with `dev_file` or a seeded share held out; and where they came from."""
    from pathlib import Path

    from llmopt.data import sft

    if cfg.data is not None:
        from llmopt.data.artifact import load_data_artifact

        data = load_data_artifact(ctx.artifacts_of(cfg.data))
        train, dev, where = data.texts("train"), data.texts("dev"), f"data stage '{cfg.data}'"
    else:
        train, where = sft.read_documents(Path(cfg.text)), str(cfg.text)
        if cfg.dev_file is not None:
            dev = sft.read_documents(Path(cfg.dev_file))
        else:
            train, dev = sft.hold_out(train, cfg.dev_fraction, ctx.seed)
    if not train or not dev:
        from llmopt.errors import DataError

        raise DataError(f"{where}: {'no train' if not train else 'no dev'} examples for finetune '{cfg.id}'.")
    return train, dev, where


def _lm_examples(cfg: FinetuneConfig, ctx: StageContext, tok: Any, limit: int) -> dict[str, Any]:
    """Train and dev examples of an LM task (tokenized), their sizes, and the instruction when sft reads labels."""
    from pathlib import Path

    from llmopt.data import sft
    from llmopt.training import causal
    from llmopt.training.tokenize import resolve_max_length

    instruction = None
    if cfg.task == "causal_lm":
        train, dev, where = _documents(cfg, ctx)
    elif cfg.data is not None:
        from llmopt.data.artifact import load_data_artifact

        data = load_data_artifact(ctx.artifacts_of(cfg.data))
        ins = cfg.instruction or InstructionConfig()
        instruction = {"template": ins.template, "label_words": sft.label_word_map(data.labels, ins.label_words)}

        def chat(rows: list[dict]) -> list[list[dict]]:
            return [sft.build_messages(r["text"], instruction)
                    + [{"role": "assistant", "content": instruction["label_words"][r["label"]]}] for r in rows]

        train, dev = chat(data.train), chat(data.dev)
        where = f"data stage '{cfg.data}'"
    else:
        train = sft.read_sft(Path(cfg.text))
        if cfg.dev_file is not None:
            dev = sft.read_sft(Path(cfg.dev_file))
        else:
            train, dev = sft.hold_out(train, cfg.dev_fraction, ctx.seed)
        where = str(cfg.text)
    if not train or not dev:
        from llmopt.errors import DataError

        raise DataError(f"{where}: {'no train' if not train else 'no dev'} examples for finetune '{cfg.id}'.")
    out: dict[str, Any] = {"instruction": instruction, "notes": [], "documents": (len(train), len(dev)),
                           "dev_texts": dev if cfg.task == "causal_lm" else None}
    if cfg.task == "causal_lm":
        size = min(cfg.block_size, limit)
        out["train"], out["dev"] = causal.pack_documents(tok, train, size), causal.pack_documents(tok, dev, size)
        out["max_length"], out["truncated"] = size, 0
    else:
        max_length = cfg.train.max_length
        if max_length == "auto":
            full = causal.encode_sft(tok, train, 10**9, where)
            max_length = resolve_max_length("auto", [len(e["input_ids"]) for e in full.examples], limit)
        max_length = min(int(max_length), limit)
        enc = causal.encode_sft(tok, train, max_length, where)
        dev_enc = causal.encode_sft(tok, dev, max_length, f"{where} (dev)")
        out["train"], out["dev"], out["max_length"] = enc.examples, dev_enc.examples, max_length
        out["truncated"], out["notes"] = enc.truncated, enc.notes + dev_enc.notes
    return out


def _domain_corpora(cfg: FinetuneConfig, tok: Any, dev_docs: list[str]) -> dict[str, list[str]] | None:
    """The held-out documents `domain_eval` scores: the dev documents ('domain') and `general_text` ('general'),
    each cut to about eval_max_tokens tokens; None when the measure is off."""
    from pathlib import Path

    on = cfg.domain_eval if cfg.domain_eval is not None else (cfg.task == "mlm" or cfg.general_text is not None)
    if not on:
        return None
    from llmopt.data.sft import read_documents
    from llmopt.eval.domain import cap_documents

    corpora = {"domain": cap_documents(dev_docs, tok, cfg.eval_max_tokens)}
    if cfg.general_text is not None:
        corpora["general"] = cap_documents(read_documents(Path(cfg.general_text)), tok, cfg.eval_max_tokens)
    return corpora


def _measure_before(ctx: StageContext, kind: str, model: Any, tok: Any, corpora: dict | None, chunk: int,
                    batch_size: int) -> dict | None:
    """The starting model's domain measures, computed once and kept in the stage folder (a resumed run starts
    from a trained checkpoint, so it reports the same 'before')."""
    from llmopt.eval.domain import measure_corpora
    from llmopt.fsutil import atomic_write_json, read_json

    if corpora is None:
        return None
    path = ctx.stage_dir / "domain_before.json"
    if path.is_file():
        return read_json(path)
    out = measure_corpora(model, tok, kind, corpora, chunk=chunk, batch_size=batch_size, threads=ctx.threads,
                          seed=ctx.seed)
    atomic_write_json(path, out)
    return out


def _measure_after(ctx: StageContext, kind: str, model: Any, tok: Any, corpora: dict | None, chunk: int,
                   batch_size: int, before: dict | None) -> dict | None:
    from llmopt.eval.domain import before_after, measure_corpora

    if corpora is None:
        return None
    after = measure_corpora(model, tok, kind, corpora, chunk=chunk, batch_size=batch_size, threads=ctx.threads,
                            seed=ctx.seed)
    return before_after(before, after, seed=ctx.seed + 1)


def _run_mlm(cfg: FinetuneConfig, ctx: StageContext) -> dict[str, Any]:
    import math

    from llmopt.fsutil import atomic_write_jsonl
    from llmopt.models import display_path, load_tokenizer
    from llmopt.training import mlm
    from llmopt.training.checkpoints import last_good_checkpoint
    from llmopt.training.tokenize import coverage, max_length_for, token_lengths
    from llmopt.training.trainer import train_masked_lm

    base = ctx.model_dir(cfg.model)
    where = f"finetune '{cfg.id}'"
    tok = load_tokenizer(base)
    mlm.check_masked_lm_base(base, tok, where)
    train_docs, dev_docs, _ = _documents(cfg, ctx)
    corpora = _domain_corpora(cfg, tok, dev_docs)
    model, new_tensors = mlm.load_masked_lm(base, allow_pickle=ctx.allow_pickle)
    chunk = max_length_for(cfg.train.max_length, tok, train_docs, model.config)
    train = mlm.encode_documents(tok, train_docs, chunk)
    dev = mlm.mask_fixed(tok, mlm.encode_documents(tok, dev_docs, chunk), seed=ctx.seed)
    # a head the base lacked starts random: its 'before' would measure the random head, not the encoder
    head_new = [k for k in new_tensors if not k.startswith(f"{model.base_model_prefix}.")]
    before = None if head_new else _measure_before(ctx, "mlm", model, tok, corpora, chunk, cfg.train.eval_batch_size)
    resume = last_good_checkpoint(ctx.stage_dir / "checkpoints")
    out = train_masked_lm(model, tok, train_dataset=train, dev_dataset=dev, cfg=cfg.train, seed=ctx.seed,
                          work_dir=ctx.stage_dir, max_length=chunk, resume_from=resume)
    domain = _measure_after(ctx, "mlm", out.model, tok, corpora, chunk, cfg.train.eval_batch_size, before)
    carried = mlm.save_masked_lm(out.model, tok, ctx.out_dir / "model", base, out.inference)
    history = out.metrics.pop("history")
    atomic_write_jsonl(ctx.out_dir / "log_history.jsonl", history)
    runtime = out.metrics.get("train_runtime_s") or 0
    train_tokens = sum(len(e["input_ids"]) for e in train)
    per_epoch = -(-len(train) // (cfg.train.batch_size * cfg.train.gradient_accumulation_steps))
    tokens_now = out.metrics["steps_trained_now"] / per_epoch * train_tokens
    return {
        **out.metrics,
        "history": history,
        "task": "mlm",
        "base_model": display_path(base),
        "n_train": len(train),
        "n_dev": len(dev),
        "train_documents": len(train_docs),
        "dev_documents": len(dev_docs),
        "train_tokens": train_tokens,
        "dev_tokens": sum(len(e["input_ids"]) for e in dev),
        "dev_masked_tokens": out.metrics["dev_loss_tokens"],
        "train_coverage": coverage(token_lengths(tok, train_docs), chunk),
        "dev_perplexity_before": math.exp(out.metrics["dev_loss_before"]),
        "dev_perplexity": math.exp(out.metrics["dev_loss"]),
        "mlm_probability": mlm.MLM_PROBABILITY,
        "head_initialised": head_new,
        "carried_from_base": carried,
        "domain_eval": domain,
        "domain_eval_note": ("No 'before': the base has no masked-LM head (it starts random), so the starting "
                             "model's pseudo-perplexity would measure a random head" if head_new and domain else None),
        "train_tokens_per_s": tokens_now / runtime if runtime > 0 else None,
        "resumed_from": str(resume) if resume else None,
    }


def _run_lm(cfg: FinetuneConfig, ctx: StageContext) -> dict[str, Any]:
    import math
    import os
    import shutil

    from llmopt import console
    from llmopt.errors import ModelError
    from llmopt.fsutil import atomic_replace_dir, atomic_write_jsonl
    from llmopt.llm import is_causal_lm, load_causal_lm, load_chat_tokenizer
    from llmopt.models import display_path
    from llmopt.training import causal
    from llmopt.training.checkpoints import last_good_checkpoint
    from llmopt.training.tokenize import model_limit
    from llmopt.training.trainer import train_causal_lm

    base = ctx.model_dir(cfg.model)
    if not is_causal_lm(base):
        raise ModelError(f"finetune '{cfg.id}': model {display_path(base)} is not a causal LM (its config.json names "
                         f"no *ForCausalLM architecture); task {cfg.task} needs one, e.g. model: {{builtin: smollm2-135m}}.")
    tok = load_chat_tokenizer(base, need_chat_template=cfg.task == "sft")
    model = load_causal_lm(base, allow_pickle=ctx.allow_pickle)
    ex = _lm_examples(cfg, ctx, tok, model_limit(tok, model.config))
    for note in ex["notes"]:
        console.note(note)
    corpora = _domain_corpora(cfg, tok, ex["dev_texts"]) if cfg.task == "causal_lm" else None
    before = _measure_before(ctx, "causal", model, tok, corpora, ex["max_length"], cfg.train.eval_batch_size)
    if cfg.lora is not None:
        model = causal.add_lora(model, cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout, cfg.lora.target_modules,
                                where=f"finetune '{cfg.id}': lora")
    params = causal.trainable_parameters(model)
    resume = last_good_checkpoint(ctx.stage_dir / "checkpoints")
    out = train_causal_lm(model, tok, train_dataset=ex["train"], dev_dataset=ex["dev"], cfg=cfg.train, seed=ctx.seed,
                          work_dir=ctx.stage_dir, resume_from=resume)
    trained = out.model
    domain = _measure_after(ctx, "causal", trained, tok, corpora, ex["max_length"], cfg.train.eval_batch_size, before)

    def save(folder: str, write: Any) -> None:
        tmp = ctx.out_dir / f".{folder}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        write(tmp)
        atomic_replace_dir(tmp, ctx.out_dir / folder)

    def save_model(tmp: Any) -> None:
        model = causal.merge_lora(trained) if cfg.lora is not None else trained
        model.save_pretrained(str(tmp))
        tok.save_pretrained(str(tmp))
        if ex["instruction"] is not None:
            from llmopt.data.sft import write_instruction

            write_instruction(tmp, ex["instruction"]["template"], ex["instruction"]["label_words"])

    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    if cfg.lora is not None:
        save("adapter", lambda tmp: trained.save_pretrained(str(tmp)))
    if cfg.lora is None or cfg.merge:
        save("model", save_model)
    history = out.metrics["history"]
    atomic_write_jsonl(ctx.out_dir / "log_history.jsonl", history)
    train_counts, dev_counts = causal.token_counts(ex["train"]), causal.token_counts(ex["dev"])
    per_epoch = math.ceil(len(ex["train"]) / (cfg.train.batch_size * cfg.train.gradient_accumulation_steps))
    runtime = out.metrics.get("train_runtime_s") or 0
    tokens_now = out.metrics["steps_trained_now"] / per_epoch * train_counts["tokens"]
    return {
        **out.metrics,
        "task": cfg.task,
        "base_model": display_path(base),
        "n_train": len(ex["train"]),
        "n_dev": len(ex["dev"]),
        "train_documents": ex["documents"][0],  # texts or conversations, before packing
        "dev_documents": ex["documents"][1],
        "train_tokens": train_counts["tokens"],
        "train_loss_tokens": train_counts["loss_tokens"],
        "dev_tokens": dev_counts["tokens"],
        "max_length": ex["max_length"],
        "truncated": ex["truncated"],
        **params,
        "lora": cfg.lora.model_dump() if cfg.lora is not None else None,
        "merged": cfg.lora is not None and cfg.merge,
        "outputs": sorted(p.name for p in ctx.out_dir.iterdir() if p.is_dir() and not p.name.startswith(".")),
        "instruction": ex["instruction"],
        "train_tokens_per_s": tokens_now / runtime if runtime > 0 else None,
        "resumed_from": str(resume) if resume else None,
        **({"domain_eval": domain} if domain is not None else {}),
    }


def section(sid: str, m: dict, doc: Any) -> None:
    """What was trained, for how long, the best dev scores (LM tasks: dev loss and perplexity) and the curve; with
    learning_rate: auto or a sweep, the trial table, the chosen values and (compare_fixed) the test gain;
    mlm / causal_lm: domain and general perplexity before and after with intervals."""
    from llmopt.report.render import _num, _pct, short_path, training_section

    doc.h(2, f"Fine-tuning ({sid})")
    if m.get("task") == "mlm":
        doc.p(f"Masked-LM continued pretraining of {short_path(m['base_model'])} ({_pct(m['mlm_probability'])}% of "
              f"the tokens chosen per chunk; 80% masked, 10% random, 10% kept): {m['n_train']:,} train / "
              f"{m['n_dev']:,} dev chunks of at most {m['max_length']} tokens from {m['train_documents']:,} / "
              f"{m['dev_documents']:,} documents, {m['train_tokens']:,} train tokens; "
              f"{_num(m.get('train_tokens_per_s'), '{:.0f}')} train tokens/s. Dev masked-LM loss (the same "
              f"{m['dev_masked_tokens']:,} masked positions each time) {m['dev_loss_before']:.3f} → "
              f"{m['dev_loss']:.3f} at the best checkpoint. Output: a masked-LM encoder folder, a base for a later "
              "finetune or distill" + (f" (carried over from the base: {', '.join(m['carried_from_base'])})."
                                       if m.get("carried_from_base") else "."))
        _domain_table(m, doc)
        training_section(sid, m, doc)
        return
    if m.get("task", "classification") == "classification":
        doc.p(f"Base model: {short_path(m['base_model'])}. {m['n_train']:,} train / {m['n_dev']:,} dev rows. "
              f"Best dev checkpoint: macro-F1 {_pct(m['dev_macro_f1'])}%, accuracy {_pct(m['dev_accuracy'])}%.")
        if m.get("lr_search"):
            from llmopt.training.sweep import section as sweep_section

            sweep_section(m, doc)
        training_section(sid, m, doc)
        return
    how = "full fine-tune" if not m.get("lora") else (
        f"LoRA r {m['lora']['r']}, alpha {m['lora']['alpha']:g}, dropout {m['lora']['dropout']:g} on "
        f"{', '.join(m['lora']['target_modules'])}")
    unit = "blocks" if m["task"] == "causal_lm" else "examples"
    doc.p(f"Task {m['task']} on {short_path(m['base_model'])} ({how}): {m['trainable_params']:,} of "
          f"{m['total_params']:,} parameters trained ({_pct(m['trainable_share'])}%). {m['n_train']:,} train / "
          f"{m['n_dev']:,} dev {unit}, {m['train_tokens']:,} / {m['dev_tokens']:,} tokens "
          f"({m['train_loss_tokens']:,} train tokens under the loss); {_num(m.get('train_tokens_per_s'), '{:.0f}')} "
          "train tokens/s.")
    doc.p(f"Dev loss {_num(m.get('dev_loss_before'), '{:.3f}')} → {_num(m.get('dev_loss'), '{:.3f}')} at the best "
          f"checkpoint (perplexity {_num(m.get('dev_perplexity_before'))} → {_num(m.get('dev_perplexity'))}). "
          + ("Output: the merged model and its adapter." if m.get("merged") else
             "Output: the adapter only (merge: false); quantize and evaluate need merge: true."
             if m.get("lora") else "Output: the fine-tuned model."))
    if m.get("truncated"):
        doc.p(f"{m['truncated']:,} SFT examples were longer than max_length {m['max_length']} and lost prompt "
              "tokens from the left.")
    _domain_table(m, doc)
    training_section(sid, m, doc)


def _domain_table(m: dict, doc: Any) -> None:
    """Domain (held-out dev documents) and general-text perplexity before → after, 95% intervals over documents,
    and the paired after/before ratio."""
    d = m.get("domain_eval")
    if not d:
        return

    def ppl(x: dict | None) -> str:
        return "—" if x is None else f"{x['ppl']:.2f} [{x['ppl_ci'][0]:.2f}, {x['ppl_ci'][1]:.2f}]"

    what = "pseudo-perplexity" if m.get("task") == "mlm" else "perplexity"
    doc.p(f"Domain adaptation: {what} of the held-out domain documents (the dev documents) and of the general "
          "text before and after training; 95% bootstrap intervals over documents; the ratio after/before with a "
          "paired interval (the same documents resampled). A lower domain value is the adaptation; a higher "
          "general value is forgetting." + (f" {m['domain_eval_note']}." if m.get("domain_eval_note") else ""))
    rows = [[name, f"{x['after']['documents']:,} / {x['after']['tokens_scored']:,}", ppl(x["before"]), ppl(x["after"]),
             "—" if not x["change"] else
             f"{x['change']['ppl_ratio']:.3f} [{x['change']['ppl_ratio_ci'][0]:.3f}, "
             f"{x['change']['ppl_ratio_ci'][1]:.3f}] {x['change']['verdict']}"] for name, x in d.items()]
    doc.table(["corpus", "documents / tokens", f"{what} before [95% CI]", "after [95% CI]",
               "after/before [95% CI]"], rows)
