"""distill stage: a smaller student trained on the teacher's cached logits (plus labels) by the one trainer."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from llmopt.stages.base import (
    InputFile, ModelRef, StageConfig, StageContext, StageRef, StageResult, Strict, model_ref_str,
)
from llmopt.training.config import KDConfig, TrainConfig


class StudentShape(Strict):
    """A student of the teacher's family with this shape (same tokenizer): random init, or cut from the teacher."""

    num_hidden_layers: int = Field(ge=1)
    hidden_size: int | None = Field(None, ge=8)
    num_attention_heads: int | None = Field(None, ge=1)
    intermediate_size: int | None = Field(None, ge=8)
    init: Literal["random", "teacher"] = Field(
        "random", description="teacher: evenly spaced teacher layers with every matrix cut to these widths "
        "(weight selection; heads keep the teacher's size); random: a fresh model of this shape")


class StudentFamily(Strict):
    """A non-transformer student over the teacher's tokenizer (Tang et al. 2019): BiLSTM or 1-D CNN (Kim 2014)."""

    kind: Literal["bilstm", "cnn"]
    embed_dim: int = Field(128, ge=8, description="embedding width")
    hidden: int = Field(128, ge=4, description="bilstm: units per direction; cnn: feature maps per kernel size")
    layers: int = Field(1, ge=1, description="bilstm: stacked LSTM layers (cnn: ignored)")
    kernel_sizes: list[int] = Field([3, 4, 5], min_length=1, description="cnn: convolution widths")
    dropout: float = Field(0.1, ge=0, lt=1)
    embeddings: Literal["teacher", "random"] = Field(
        "teacher", description="teacher: the teacher's input embeddings (trimmed vocabulary) reduced to embed_dim "
        "by PCA; random: a fresh table")


class DistillConfig(StageConfig):
    """Distil the teacher (earlier stage id or folder) into a student: teacher layers, k layers, a shape, a
    non-transformer family, or a model."""

    type: Literal["distill"] = "distill"
    data: StageRef = Field("data", description="data stage (train split = transfer set)")
    teacher: ModelRef
    layers: list[int] | None = Field(None, description="copy these teacher layers (DistilBERT-style init)")
    num_layers: int | None = Field(None, ge=1, description="copy k evenly spaced teacher layers")
    student_config: StudentShape | None = Field(None, description="a transformer of this shape (random or cut "
                                                "from the teacher)")
    student_family: StudentFamily | None = Field(None, description="a BiLSTM or CNN student (same tokenizer)")
    student_model: ModelRef | None = Field(None, description="another model as student (its own tokenizer)")
    hidden_loss_weight: float = Field(0.0, ge=0, description="MSE on mapped hidden states (TinyBERT), through a "
                                      "learnt projection when the student is narrower")
    attention_loss_weight: float = Field(0.0, ge=0, description="KL between the last layers' self-attention "
                                         "distributions (MiniLM)")
    vocab_trim: bool = Field(False, description="keep only the tokens of the train, dev and transfer texts (plus "
                             "specials and single characters) in the student's tokenizer and embeddings")
    extra_texts: list[InputFile] = Field([], description="JSONL (text) or .txt files of unlabelled transfer text")
    unlabelled: bool = Field(True, description="add the data stage's unlabelled texts (train/dev rows its caps left "
                             "out, or its source's `unlabelled:` file) to the transfer set, teacher-labelled")
    max_transfer_rows: int | None = Field(None, ge=1, description="at most this many unlabelled transfer texts (a "
                                          "seeded sample; the labelled train rows are always kept)")
    transfer: StageRef | None = Field(None, description="an augment stage: its variants join the transfer set, "
                                      "teacher-labelled")
    kd: KDConfig = KDConfig()
    train: TrainConfig = TrainConfig(learning_rate=1e-4)

    @model_validator(mode="after")
    def _one_student(self) -> "DistillConfig":
        kinds = ("layers", "num_layers", "student_config", "student_family", "student_model")
        given = [k for k in kinds if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of {', '.join(kinds)}"
                             + (f" (got {', '.join(given)})" if given else ""))
        if (self.hidden_loss_weight or self.attention_loss_weight) and (self.student_family or self.student_model):
            raise ValueError("hidden_loss_weight / attention_loss_weight need a transformer student built from the "
                             "teacher (layers, num_layers or student_config): set them to 0 for "
                             + ("student_family" if self.student_family else "student_model"))
        if self.vocab_trim and self.student_model:
            raise ValueError("vocab_trim trims the teacher's tokenizer; a student_model keeps its own: remove one")
        return self


def build_student(cfg: DistillConfig, teacher: Any, tokenizer: Any, labels: list[str], corpus: list[str]) -> dict:
    """The student of `cfg` from the (in-memory) teacher: {student, tokenizer, teacher (trimmed like the student),
    layers (teacher layers copied), mapping (student layer → teacher layer, for layer-wise losses), description}.
    With vocab_trim the teacher copy is trimmed to the same tokens first, so both read the same ids."""
    import copy

    from llmopt.compression.distillation import evenly_spaced, narrow_student, small_student, student_from_teacher
    from llmopt.training.losses import uniform_mapping

    vocab = None
    if cfg.vocab_trim:
        from llmopt.compression.vocab import trim_vocab

        teacher, tokenizer, vocab = trim_vocab(copy.deepcopy(teacher), tokenizer, corpus)
    n = teacher.config.num_hidden_layers
    out: dict[str, Any] = {"teacher": teacher, "tokenizer": tokenizer, "layers": None, "mapping": None, "vocab": vocab}
    if cfg.student_family:
        from llmopt.compression.rnn_student import textnet_student

        f = cfg.student_family
        emb = teacher.get_input_embeddings().weight if f.embeddings == "teacher" else None
        out["student"] = textnet_student(f.kind, tokenizer, labels, embed_dim=f.embed_dim, hidden=f.hidden,
                                         layers=f.layers, kernel_sizes=f.kernel_sizes, dropout=f.dropout,
                                         teacher_embeddings=emb)
        out["description"] = (f"{f.kind} (embed {f.embed_dim}, hidden {f.hidden}"
                              + (f", {f.layers} layers" if f.kind == "bilstm" else f", kernels {f.kernel_sizes}")
                              + (", embeddings PCA of the teacher's)" if emb is not None else ", random embeddings)"))
    elif cfg.student_config:
        shape = cfg.student_config
        if shape.init == "teacher":
            layers = evenly_spaced(n, shape.num_hidden_layers)
            out["student"] = narrow_student(teacher, layers, shape.hidden_size, shape.intermediate_size)
            out["layers"] = out["mapping"] = layers
            out["description"] = f"cut from teacher layers {layers}, hidden {out['student'].config.hidden_size}"
        else:
            dims = shape.model_dump(exclude_none=True, exclude={"init"})
            out["student"] = small_student(teacher.config, dims, labels)
            out["mapping"] = uniform_mapping(shape.num_hidden_layers, n)
            out["description"] = "random init " + str(dims)
    else:
        layers = cfg.layers or evenly_spaced(n, cfg.num_layers)
        out["student"] = student_from_teacher(teacher, layers)
        out["layers"] = out["mapping"] = layers
        out["description"] = f"teacher layers {layers}"
    return out


def run(cfg: DistillConfig, ctx: StageContext) -> StageResult:
    """Build the student, label the transfer set with the teacher once (cached), train the student with the KD
    loss (plus the layer-wise losses when asked), and save it to artifacts/model."""
    from llmopt.compression.distillation import RUN_CACHE, gather_transfer_texts, teacher_logits
    from llmopt.data.artifact import load_data_artifact
    from llmopt.errors import ModelError
    from llmopt.fsutil import atomic_write_jsonl
    from llmopt.models import display_path, load_classifier, load_tokenizer, read_inference_settings, save_model
    from llmopt.training.checkpoints import last_good_checkpoint
    from llmopt.training.config import with_model_settings
    from llmopt.training.losses import LayerwiseKD
    from llmopt.training.trainer import train_classifier

    data = load_data_artifact(ctx.artifacts_of(cfg.data))
    t_dir = ctx.model_dir(cfg.teacher)
    train_cfg = with_model_settings(cfg.train, read_inference_settings(t_dir))  # unset: as the teacher was trained
    teacher = load_classifier(t_dir, allow_pickle=ctx.allow_pickle)
    teacher_params = int(sum(p.numel() for p in teacher.parameters()))
    t_labels = list(teacher.config.id2label.values())
    if t_labels != data.labels:
        raise ModelError(f"distill '{cfg.id}': teacher {t_dir} predicts {t_labels}, the data has labels "
                         f"{data.labels}. Distil a teacher fine-tuned on this data.")

    texts, labels = data.texts("train"), data.ids(data.train)
    extra = gather_transfer_texts(cfg, ctx, data.unlabelled)
    all_texts, all_labels = texts + extra, labels + [-100] * len(extra)  # -100: no label, KD term only

    tokenizer = load_tokenizer(t_dir)
    if cfg.student_model:
        s_dir = ctx.model_dir(cfg.student_model)
        student = load_classifier(s_dir, labels=data.labels, allow_pickle=ctx.allow_pickle,
                                  ignore_mismatched_sizes=True)
        built = {"student": student, "tokenizer": load_tokenizer(s_dir), "layers": None, "mapping": None,
                 "vocab": None, "description": "model " + display_path(s_dir), "teacher": teacher}
    else:
        built = build_student(cfg, teacher, tokenizer, data.labels, all_texts + data.texts("dev"))
    student, tokenizer, layers = built["student"], built["tokenizer"], built["layers"]
    built_description, vocab_info = built["description"], built["vocab"]

    logits = teacher_logits(t_dir, all_texts, max_length=train_cfg.max_length, truncation=train_cfg.truncation,
                            cache=ctx.run_dir / RUN_CACHE, allow_pickle=ctx.allow_pickle)
    teacher_train_acc = float((logits[: len(texts)].argmax(1) == labels).mean())
    layerwise = None
    if cfg.hidden_loss_weight > 0 or cfg.attention_loss_weight > 0:
        layerwise = LayerwiseKD(built["teacher"], student, built["mapping"], hidden_weight=cfg.hidden_loss_weight,
                                attention_weight=cfg.attention_loss_weight,
                                include_embeddings=cfg.student_config is not None)
    del teacher, built
    out = train_classifier(
        student, tokenizer, train=(all_texts, all_labels), dev=(data.texts("dev"), data.ids(data.dev)),
        num_labels=len(data.labels), cfg=train_cfg, seed=ctx.seed, work_dir=ctx.stage_dir,
        resume_from=last_good_checkpoint(ctx.stage_dir / "checkpoints"), teacher_logits=logits, kd=cfg.kd,
        hidden=layerwise,
    )
    if layerwise is not None:
        layerwise.detach()  # the projection was a training device; the saved student has none
    dev = out.trainer.evaluate()
    save_model(out.model, tokenizer, ctx.out_dir / "model", inference=out.inference)
    atomic_write_jsonl(ctx.out_dir / "log_history.jsonl", out.trainer.state.log_history)
    return StageResult({
        **out.metrics,
        "parent": model_ref_str(cfg.teacher),
        "teacher": display_path(t_dir),
        "student": built_description,
        "student_family": (cfg.student_family.kind if cfg.student_family else
                           "model" if cfg.student_model else "transformer"),
        "student_layers": layers,
        "student_params": int(sum(p.numel() for p in out.model.parameters())),
        "teacher_params": teacher_params,
        "layerwise_loss": ({"hidden_weight": cfg.hidden_loss_weight, "attention_weight": cfg.attention_loss_weight,
                            "mapping": layerwise.mapping, "projection": layerwise.projection is not None}
                           if layerwise is not None else None),
        "vocab": vocab_info,
        "transfer_rows": len(all_texts),
        "unlabelled_rows": len(extra),
        "data_unlabelled_rows": len(data.unlabelled) if cfg.unlabelled else 0,
        "transfer_stage": cfg.transfer,
        "teacher_train_accuracy": teacher_train_acc,
        "dev_accuracy": dev.get("eval_accuracy"),
        "dev_macro_f1": dev.get("eval_macro_f1"),
        "dev_loss": dev.get("eval_loss"),
    })


def section(sid: str, m: dict, doc: Any) -> None:
    """Teacher, student, transfer set, dev scores and the training curve."""
    from llmopt.report.render import _num, _pct, short_path, training_section

    doc.h(2, f"Distillation ({sid})")
    kd = m.get("kd") or {}
    layers = m.get("student_layers")
    student = (f"a {len(layers)}-layer student made of the teacher's layers {', '.join(map(str, layers))}"
               + (f" ({m['student']})" if "hidden" in m["student"] else "") if layers
               else short_path(m["student"]) if m.get("student_family", "model") == "model" else f"a {m['student']}")
    labelled = m["transfer_rows"] - m["unlabelled_rows"]
    doc.p(f"Teacher → student: {short_path(m.get('parent') or m['teacher'])} ({m['teacher_params']:,} parameters) → "
          f"{student} ({m['student_params']:,} parameters, {m['teacher_params'] / max(m['student_params'], 1):.1f}× "
          "fewer). Transfer set: " + (f"{m['transfer_rows']:,} texts — the {labelled:,} labelled train rows plus "
                                      f"{m['unlabelled_rows']:,} unlabelled or augmented texts"
                                      + (f" (the data stage's {m['data_unlabelled_rows']:,} unlabelled texts among "
                                         "them)" if m.get("data_unlabelled_rows") else "")
                                      + (f" (augment stage '{m['transfer_stage']}')" if m.get("transfer_stage") else "")
                                      if m["unlabelled_rows"] else f"the {labelled:,} labelled train rows")
          + "; the teacher's logits on them are the soft targets (it gets "
          f"{_pct(m['teacher_train_accuracy'])}% of the labelled train rows right). Loss: "
          f"{_num(kd.get('alpha'), '{:g}')}·T²·KL at T = {_num(kd.get('temperature'), '{:g}')} plus "
          f"{_num(1 - kd['alpha'] if kd else None, '{:g}')}·cross-entropy"
          + (layerwise_text(m["layerwise_loss"]) if m.get("layerwise_loss") else "") + ". "
          + (f"Vocabulary trimmed to the {m['vocab']['vocab_after']:,} tokens the train, dev and transfer texts use "
             f"(of {m['vocab']['vocab_before']:,}). " if m.get("vocab") else "") +
          f"Dev: accuracy {_pct(m['dev_accuracy'])}%, macro-F1 {_pct(m['dev_macro_f1'])}%.")
    training_section(sid, m, doc)


def layerwise_text(lw: dict) -> str:
    """The layer-wise terms of the loss in words."""
    parts = []
    if lw.get("hidden_weight"):
        parts.append(f"{lw['hidden_weight']:g}·MSE between student and teacher hidden states (student layer i ↔ "
                     f"teacher layer {lw['mapping']}" + (", through a learnt projection dropped after training"
                                                         if lw.get("projection") else "") + ")")
    if lw.get("attention_weight"):
        parts.append(f"{lw['attention_weight']:g}·KL between the last layers' self-attention distributions")
    return "".join(f" plus {p}" for p in parts)
