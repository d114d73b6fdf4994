"""compare stage: the measured gain of a data stage (augment, curate) — the same model trained on a baseline and
a treatment data stage with the same seeds, scored on the same held-out split, with a paired 95% interval — or of
a model (a domain-adapted encoder, `treatment_model`) against `model` on the same data."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from llmopt.stages.base import BuiltinModel, ModelRef, StageConfig, StageContext, StageRef, StageResult, model_ref_str
from llmopt.training.config import TrainConfig


class CompareConfig(StageConfig):
    """Fine-tune `model` on `baseline`'s and on `treatment`'s train split once per seed; report the paired
    accuracy difference (treatment − baseline) on `split` with a 95% t-interval over the seeds. With
    `treatment_model`, the treatment arm fine-tunes that model instead (on `treatment`, by default the baseline
    data stage): the gain of the model, e.g. a domain-adapted encoder (finetune task mlm) over its base."""

    type: Literal["compare"] = "compare"
    baseline: StageRef = "data"
    treatment: StageRef | None = Field(None, description="data stage of the treatment arm (default: baseline, "
                                       "only with treatment_model)")
    model: ModelRef = BuiltinModel(builtin="minilm")
    treatment_model: ModelRef | None = Field(None, description="the treatment arm's model (default: model)")
    seeds: list[int] = Field([1, 2, 3], min_length=2, description="one training run per seed and arm (≥ 2)")
    split: Literal["dev", "test"] = "test"
    train: TrainConfig = TrainConfig()

    @model_validator(mode="before")
    @classmethod
    def _same_data(cls, raw: Any) -> Any:
        if isinstance(raw, dict) and raw.get("treatment_model") is not None and raw.get("treatment") is None:
            raw = {**raw, "treatment": raw.get("baseline", "data")}
        return raw

    @model_validator(mode="after")
    def _two_arms(self) -> "CompareConfig":
        if self.treatment is None:
            raise ValueError("treatment: name the treatment data stage, or give treatment_model")
        if self.baseline == self.treatment and self.treatment_model is None:
            raise ValueError(f"baseline and treatment are both '{self.baseline}'; name two different data stages "
                             "or give treatment_model")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds {self.seeds} repeat a seed; the runs would be identical")
        return self


def paired_interval(treatment: list[float], baseline: list[float], level: float = 0.95) -> dict[str, Any]:
    """Mean of the per-seed differences and its t-interval (n − 1 degrees of freedom); verdict 'gain' or 'loss'
    only when the interval excludes 0, else 'no significant difference'."""
    import numpy as np
    from scipy import stats

    d = np.asarray(treatment, float) - np.asarray(baseline, float)
    mean = float(d.mean())
    half = float(stats.t.ppf(0.5 + level / 2, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("inf")
    lo, hi = mean - half, mean + half
    verdict = "gain" if lo > 0 else "loss" if hi < 0 else "no significant difference"
    return {"mean": mean, "ci": [lo, hi], "diffs": d.tolist(), "n_seeds": len(d), "verdict": verdict}


def run(cfg: CompareConfig, ctx: StageContext) -> StageResult:
    """Train both arms for every seed (each run's predictions saved under the stage folder, so a resumed stage
    skips finished runs), then write the paired difference of accuracy and macro-F1 on the held-out split."""
    import shutil

    import numpy as np

    from llmopt.data.artifact import load_data_artifact
    from llmopt.errors import RecipeError
    from llmopt.eval.metrics import accuracy, macro_f1
    from llmopt.eval.predictors import HFClassifier, predict_all
    from llmopt.fsutil import atomic_write_json, read_json
    from llmopt.models import display_path, load_classifier, load_tokenizer, save_model
    from llmopt.training.checkpoints import last_good_checkpoint
    from llmopt.training.trainer import train_classifier

    arms = {"baseline": load_data_artifact(ctx.artifacts_of(cfg.baseline)),
            "treatment": load_data_artifact(ctx.artifacts_of(cfg.treatment))}
    b, t = arms["baseline"], arms["treatment"]
    if b.labels != t.labels or b.texts(cfg.split) != t.texts(cfg.split) or b.ids(b.split(cfg.split)) != t.ids(t.split(cfg.split)):
        raise RecipeError(f"compare '{cfg.id}': stages '{cfg.baseline}' and '{cfg.treatment}' have different "
                          f"{cfg.split} splits or labels; compare two data stages built from the same held-out rows.")
    base = ctx.model_dir(cfg.model)
    bases = {"baseline": base,
             "treatment": ctx.model_dir(cfg.treatment_model) if cfg.treatment_model is not None else base}
    held_out = b.texts(cfg.split)
    y = np.asarray(b.ids(b.split(cfg.split)))
    runs: dict[str, list[dict]] = {"baseline": [], "treatment": []}
    for seed in cfg.seeds:
        for arm, data in arms.items():
            work = ctx.stage_dir / f"{arm}-seed{seed}"
            done = work / "result.json"
            if not done.is_file():
                tok = load_tokenizer(bases[arm])
                model = load_classifier(bases[arm], labels=data.labels, allow_pickle=ctx.allow_pickle,
                                        ignore_mismatched_sizes=True)
                out = train_classifier(model, tok, train=(data.texts("train"), data.ids(data.train)),
                                       dev=(data.texts("dev"), data.ids(data.dev)), num_labels=len(data.labels),
                                       cfg=cfg.train, seed=seed, work_dir=work,
                                       resume_from=last_good_checkpoint(work / "checkpoints"))
                save_model(out.model, tok, work / "model", inference=out.inference)
                pred = predict_all(HFClassifier(work / "model"), held_out).argmax(1)
                atomic_write_json(done, {"seed": seed, "n_train": len(data.train), "pred": pred.tolist(),
                                         "accuracy": accuracy(y, pred),
                                         "macro_f1": macro_f1(y, pred, len(data.labels))})
                shutil.rmtree(work / "checkpoints", ignore_errors=True)  # predictions are all compare needs
                shutil.rmtree(work / "model", ignore_errors=True)
            runs[arm].append(read_json(done))
    acc = paired_interval([r["accuracy"] for r in runs["treatment"]], [r["accuracy"] for r in runs["baseline"]])
    f1 = paired_interval([r["macro_f1"] for r in runs["treatment"]], [r["macro_f1"] for r in runs["baseline"]])
    return StageResult({
        "baseline": cfg.baseline, "treatment": cfg.treatment, "model": display_path(base), "split": cfg.split,
        "treatment_model": display_path(bases["treatment"]) if cfg.treatment_model is not None else None,
        "treatment_model_ref": model_ref_str(cfg.treatment_model) if cfg.treatment_model is not None else None,
        "n_eval": len(held_out), "seeds": list(cfg.seeds),
        "n_train": {arm: runs[arm][0]["n_train"] for arm in runs},
        "accuracy": {arm: [r["accuracy"] for r in runs[arm]] for arm in runs},
        "macro_f1": {arm: [r["macro_f1"] for r in runs[arm]] for arm in runs},
        "accuracy_gain": acc, "macro_f1_gain": f1,
    })


def section(sid: str, m: dict, doc: Any) -> None:
    """Per-seed scores of both arms and the paired gain with its 95% interval and verdict."""
    from llmopt.report.render import short_path

    g = m["accuracy_gain"]
    if m.get("treatment_model"):
        treated = m.get("treatment_model_ref") or short_path(m["treatment_model"])
        doc.h(2, f"Measured gain: {treated} vs {short_path(m['model'])} ({sid})")
        doc.p(f"{short_path(m['model'])} (baseline) and {treated} (treatment) fine-tuned on "
              f"'{m['treatment']}' ({m['n_train']['treatment']:,} train rows) with seeds "
              f"{', '.join(map(str, m['seeds']))}; accuracy on {m['split']} ({m['n_eval']:,} rows). Gain "
              f"{100 * g['mean']:+.2f} points, 95% interval [{100 * g['ci'][0]:+.2f}, {100 * g['ci'][1]:+.2f}] "
              f"(t over {g['n_seeds']} paired seeds): {g['verdict']}.")
        doc.table(["seed", "baseline acc %", "treatment acc %", "Δ points"],
                  [[str(s), f"{100 * a:.2f}", f"{100 * b:.2f}", f"{100 * (b - a):+.2f}"]
                   for s, a, b in zip(m["seeds"], m["accuracy"]["baseline"], m["accuracy"]["treatment"])])
        return
    doc.h(2, f"Measured gain: {m['treatment']} vs {m['baseline']} ({sid})")
    doc.p(f"{short_path(m['model'])} fine-tuned on '{m['baseline']}' ({m['n_train']['baseline']:,} train rows) and on "
          f"'{m['treatment']}' ({m['n_train']['treatment']:,}) with seeds {', '.join(map(str, m['seeds']))}; "
          f"accuracy on {m['split']} ({m['n_eval']:,} rows). Gain {100 * g['mean']:+.2f} points, 95% interval "
          f"[{100 * g['ci'][0]:+.2f}, {100 * g['ci'][1]:+.2f}] (t over {g['n_seeds']} paired seeds): "
          f"{g['verdict']}.")
    doc.table(["seed", f"{m['baseline']} acc %", f"{m['treatment']} acc %", "Δ points"],
              [[str(s), f"{100 * a:.2f}", f"{100 * b:.2f}", f"{100 * (b - a):+.2f}"]
               for s, a, b in zip(m["seeds"], m["accuracy"]["baseline"], m["accuracy"]["treatment"])])
