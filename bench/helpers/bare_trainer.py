"""A bare Hugging Face Trainer script: the reference llmopt's fine-tuning overhead is measured against.

Same model, data, tokenization and training settings as llmopt's finetune stage, none of llmopt's
machinery. Writes a JSON result to the path given as the last argument.
"""

import json
import sys
import time

t_start = time.perf_counter()

import numpy as np  # noqa: E402
from datasets import Dataset  # noqa: E402
from sklearn.metrics import accuracy_score, f1_score  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, EarlyStoppingCallback, Trainer,
    TrainingArguments,
)


def read(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def main(data_dir, model_dir, out_dir, lr, epochs, max_length, seed, result_path):
    train, dev, test = (read(f"{data_dir}/{s}.jsonl") for s in ("train", "dev", "test"))
    labels = sorted({r["label"] for r in train})
    l2i = {lab: i for i, lab in enumerate(labels)}
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(
        model_dir, num_labels=len(labels), id2label=dict(enumerate(labels)), label2id=l2i
    )

    def ds(rows):
        enc = tok([r["text"] for r in rows], truncation=True, max_length=max_length)
        return Dataset.from_dict({**enc, "labels": [l2i[r["label"]] for r in rows]})

    def metrics(p):
        pred = np.argmax(p.predictions, axis=-1)
        return {"accuracy": accuracy_score(p.label_ids, pred), "macro_f1": f1_score(p.label_ids, pred, average="macro")}

    args = TrainingArguments(
        output_dir=out_dir, learning_rate=lr, num_train_epochs=epochs, per_device_train_batch_size=32,
        per_device_eval_batch_size=64, warmup_steps=0.1, lr_scheduler_type="linear", weight_decay=0.01,
        eval_strategy="epoch", save_strategy="epoch", load_best_model_at_end=True, metric_for_best_model="macro_f1",
        save_total_limit=2, train_sampling_strategy="group_by_length", seed=seed, data_seed=seed, logging_steps=10,
        report_to="none", dataloader_pin_memory=False,
    )
    trainer = Trainer(model=model, args=args, train_dataset=ds(train), eval_dataset=ds(dev), processing_class=tok,
                      data_collator=DataCollatorWithPadding(tok), compute_metrics=metrics,
                      callbacks=[EarlyStoppingCallback(early_stopping_patience=2)])
    out = trainer.train()
    pred = trainer.predict(ds(test))
    y_pred = np.argmax(pred.predictions, axis=-1)
    trainer.save_model(f"{out_dir}/final")
    result = {
        "test_accuracy": float(accuracy_score(pred.label_ids, y_pred)),
        "macro_f1": float(f1_score(pred.label_ids, y_pred, average="macro")),
        "train_samples_per_s": out.metrics["train_samples_per_second"],
        "train_runtime_s": out.metrics["train_runtime"],
        "wall_s_in_process": time.perf_counter() - t_start,
    }
    with open(result_path, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    a = sys.argv[1:]
    main(a[0], a[1], a[2], float(a[3]), float(a[4]), int(a[5]), int(a[6]), a[7])
