"""Measuring a training sweep (`llmopt.training.sweep`): a trial's dev scores with intervals, and the chosen block
against the fixed one on test with a paired interval. Here, not in training: training does not import eval."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llmopt.training.sweep import Sweep


def score_dev(trainer: Any, num_labels: int, metric: str, seed: int) -> dict[str, Any]:
    """The trial's dev scores: accuracy and macro-F1 with 95% bootstrap intervals, mean loss; `value` and `ci`
    are those of `metric` (the block's metric_for_best)."""
    import numpy as np

    from llmopt.eval.metrics import accuracy, bootstrap_ci, bootstrap_indices, macro_f1

    out = trainer.predict(trainer.eval_dataset)
    logits = out.predictions[0] if isinstance(out.predictions, tuple) else out.predictions
    y = np.asarray(out.label_ids)
    pred = logits.argmax(1)
    z = logits - logits.max(1, keepdims=True)
    nll = np.log(np.exp(z).sum(1)) - z[np.arange(len(y)), y]
    ci = bootstrap_ci(y, pred, num_labels, resamples=1000, seed=seed)
    means = nll[bootstrap_indices(len(y), 1000, seed)].mean(1)
    ci["loss"] = [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]
    scores = {"accuracy": accuracy(y, pred), "macro_f1": macro_f1(y, pred, num_labels), "loss": float(nll.mean())}
    return {"metric": metric, "value": scores[metric], "ci": ci[metric], "n": int(len(y)), **scores,
            "accuracy_ci": ci["accuracy"], "macro_f1_ci": ci["macro_f1"]}


def compare_fixed(search: Sweep, data: Any, chosen_model: Path) -> dict[str, Any] | None:
    """The chosen block's model against a full training of the fixed block (learning_rate 2e-5 under auto) on
    the test split: both accuracies with 95% intervals, the paired bootstrap difference. Resumable: the fixed
    model's test predictions are kept in trials/fixed.json."""
    import shutil

    import numpy as np

    from llmopt.eval.metrics import bootstrap_ci, paired_bootstrap
    from llmopt.eval.predictors import HFClassifier, predict_all
    from llmopt.fsutil import atomic_write_json, read_json
    from llmopt.models import save_model
    from llmopt.training.checkpoints import last_good_checkpoint
    from llmopt.training.trainer import train_classifier

    if not search.block.compare_fixed or not data.test:
        return None
    texts, y = data.texts("test"), np.asarray(data.ids(data.test))
    k = len(data.labels)
    chosen = predict_all(HFClassifier(chosen_model), texts).argmax(1)
    same = search.cfg == search.fixed
    if same:
        fixed_pred = chosen
    else:
        path, work = search.dir / "fixed.json", search.dir / "fixed"
        if not path.is_file():
            out = train_classifier(search.pristine, search.tokenizer, train=search.train, dev=search.dev,
                                   num_labels=k, cfg=search.fixed, seed=search.seed, work_dir=work,
                                   resume_from=last_good_checkpoint(work / "checkpoints"))
            save_model(out.model, search.tokenizer, work / "model", inference=out.inference)
            pred = predict_all(HFClassifier(work / "model"), texts).argmax(1)
            atomic_write_json(path, {"values": {f: getattr(search.fixed, f) for f in search.fields},
                                     "train_s": out.metrics.get("train_runtime_s"), "pred": pred.tolist()})
            shutil.rmtree(work, ignore_errors=True)
        fixed_pred = np.asarray(read_json(path)["pred"])
    ci_c, ci_f = bootstrap_ci(y, chosen, k, seed=search.seed), bootstrap_ci(y, fixed_pred, k, seed=search.seed)
    return {"split": "test", "n": int(len(y)), "same_config": same,
            "fixed": {f: getattr(search.fixed, f) for f in search.fields},
            "chosen_accuracy": float((chosen == y).mean()), "chosen_accuracy_ci": ci_c["accuracy"],
            "fixed_accuracy": float((fixed_pred == y).mean()), "fixed_accuracy_ci": ci_f["accuracy"],
            "gain": paired_bootstrap(y, chosen, fixed_pred, k, seed=search.seed)}
