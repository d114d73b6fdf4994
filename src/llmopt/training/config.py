"""The one training block every training stage composes (`train:` in a recipe). Imports only pydantic."""

from __future__ import annotations

from typing import Annotated, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator

Truncation = Literal["right", "head_tail"]
TRUNCATIONS: tuple[str, ...] = get_args(Truncation)


class TrainConfig(BaseModel):
    """Trainer settings shared by finetune, distill, prune (recovery) and search."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    learning_rate: Annotated[float, Field(gt=0)] | Literal["auto"] = Field(
        2e-5, description="auto: chosen on dev among 2e-5, 5e-5, 1e-4, 2e-4 by short trials (training.sweep)")
    epochs: float = Field(3, gt=0)
    max_steps: int = Field(-1, description="stop after this many optimizer steps (-1: use epochs)")
    batch_size: int = Field(32, ge=1)
    eval_batch_size: int = Field(64, ge=1)
    gradient_accumulation_steps: int = Field(1, ge=1)
    warmup_ratio: float = Field(0.1, ge=0, lt=1, description="share of the steps with a linear warm-up")
    scheduler: Literal["linear", "cosine", "constant"] = "linear"
    weight_decay: float = Field(0.01, ge=0)
    early_stopping_patience: int | None = Field(2, ge=1, description="evaluations without dev improvement; null: off")
    metric_for_best: Literal["macro_f1", "accuracy", "loss"] = "macro_f1"
    max_length: int | Literal["auto"] = Field(
        128, description="tokens kept per text; auto: the 95th percentile of train lengths, within the model's limit")
    truncation: Truncation = Field(
        "right", description="head_tail keeps the first quarter and the last three quarters of a long text's tokens")
    save_total_limit: int = Field(2, ge=1)
    group_by_length: bool = Field(True, description="batch texts of similar length (less padding)")
    logging_steps: int = Field(10, ge=1)
    fsdp: bool = Field(False, description="shard the model with FSDP (FSDP2) across GPU ranks: the Trainer's fsdp")
    fsdp_config: dict | None = Field(None, description="the Trainer's fsdp_config, with fsdp: true (e.g. "
                                     "{reshard_after_forward: true, cpu_offload: false, transformer_layer_cls_to_wrap: "
                                     "[BertLayer]})")
    sweep_strategy: Literal["halving", "grid"] = Field("halving", description="halving: successive halving of short "
                                                       "trials; grid: one short trial per candidate")
    sweep_budget: float = Field(0.75, gt=0, description="the trials' seconds at most this many times one full "
                                "training (0.75: with the full training, the stage stays under 2x one fine-tune)")
    compare_fixed: bool = Field(False, description="also train the block without its sweep (learning_rate 2e-5 under "
                                "auto) and report the chosen one's test gain with a paired interval")
    sweep: dict[str, list] | None = Field(None, validate_default=True, description="training field -> candidate "
                                          "values; their product is swept, chosen on dev")

    @field_validator("sweep")
    @classmethod
    def _check_sweep(cls, v: dict | None, info) -> dict | None:  # noqa: ANN001 — pydantic's ValidationInfo
        from llmopt.training.sweep import check_sweep

        return check_sweep(cls, v, info.data)


class KDConfig(BaseModel):
    """The distillation loss: alpha·T²·KL(teacher/T ‖ student/T) + (1 − alpha)·CE."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    temperature: float = Field(2.0, gt=0)
    alpha: float = Field(0.5, ge=0, le=1, description="weight of the KD term; 1 - alpha on cross-entropy")


def with_model_settings(cfg: TrainConfig, settings: dict) -> TrainConfig:
    """`cfg` with the max_length / truncation the recipe left unset taken from the parent model's training
    settings (`llmopt.models.read_inference_settings`), so a student or a pruned model sees texts as its parent did."""
    update = {k: settings[k] for k in ("max_length", "truncation") if k in settings and k not in cfg.model_fields_set}
    return cfg.model_copy(update=update) if update else cfg


LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj", "gate_proj")


class LoraConfig(BaseModel):
    """LoRA adapters (peft) on the named Linear modules; the base weights stay frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    r: int = Field(8, ge=1, description="rank of each adapter")
    alpha: float = Field(16, gt=0, description="scaling: the update is (alpha / r)·B·A")
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] = Field(list(LORA_TARGETS), min_length=1,
                                      description="last names of the Linear modules to adapt (Llama: q/k/v/o_proj, "
                                                  "up/down/gate_proj)")


class InstructionConfig(BaseModel):
    """Classification as instruction: each labelled row becomes a user turn from `template`, answered by its label word."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    template: str = Field(
        "Classify the sentiment of this review. Answer with one word: {labels}.\n\nReview: {text}",
        description="str.format template with {text} (the row) and optionally {labels} (the answer words, 'a, b')")
    label_words: dict[str, str] = Field({}, description="label → the word the model answers with (default: the label)")

    @field_validator("template")
    @classmethod
    def _known_fields(cls, v: str) -> str:
        from llmopt.data.sft import template_fields

        template_fields(v)  # ValueError naming an unknown {field}
        return v
