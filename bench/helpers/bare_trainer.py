"""A bare Hugging Face Trainer script: the reference llmopt's fine-tuning overhead is measured against.

Same model, data, tokenization and training settings as llmopt's finetune stage, none of llmopt's
machinery. Writes a JSON result to --result. `saved_at` (time.time()) marks the moment the trained
model and tokenizer are on disk: bench/finetune.py times launch -> saved_at, the same work an
`llmopt run` of a data + finetune recipe does; the test-set prediction that follows is not timed.
"""

import argparse
import json
import os
import time

t_start = time.perf_counter()

import numpy as np  # noqa: E402
import torch  # noqa: E402
from datasets import Dataset  # noqa: E402
from sklearn.metrics import accuracy_score, f1_score  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, EarlyStoppingCallback, Trainer,
    TrainingArguments,
)


def read(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def main(a):
    torch.set_num_threads(a.threads)  # the bench also sets OMP/MKL_NUM_THREADS; llmopt does the same from `threads:`
    torch.manual_seed(a.seed)
    train, dev, test = (read(f"{a.data_dir}/{s}.jsonl") for s in ("train", "dev", "test"))
    labels = sorted({r["label"] for r in train})
    l2i = {lab: i for i, lab in enumerate(labels)}
    tok = AutoTokenizer.from_pretrained(a.model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(
        a.model_dir, num_labels=len(labels), id2label=dict(enumerate(labels)), label2id=l2i
    )

    def ds(rows):
        enc = tok([r["text"] for r in rows], truncation=True, max_length=a.max_length)
        return Dataset.from_dict({**enc, "labels": [l2i[r["label"]] for r in rows]})

    def metrics(p):
        pred = np.argmax(p.predictions, axis=-1)
        return {"accuracy": accuracy_score(p.label_ids, pred), "macro_f1": f1_score(p.label_ids, pred, average="macro")}

    args = TrainingArguments(
        output_dir=a.out_dir, learning_rate=a.lr, num_train_epochs=a.epochs, per_device_train_batch_size=a.batch_size,
        per_device_eval_batch_size=64, warmup_steps=0.1, lr_scheduler_type="linear", weight_decay=0.01,
        eval_strategy="epoch", save_strategy="epoch", load_best_model_at_end=True, metric_for_best_model="macro_f1",
        save_total_limit=2, train_sampling_strategy="group_by_length", seed=a.seed, data_seed=a.seed,
        logging_steps=10, report_to="none", dataloader_pin_memory=False, use_cpu=True,
    )
    trainer = Trainer(model=model, args=args, train_dataset=ds(train), eval_dataset=ds(dev), processing_class=tok,
                      data_collator=DataCollatorWithPadding(tok), compute_metrics=metrics,
                      callbacks=[EarlyStoppingCallback(early_stopping_patience=2)])
    out = trainer.train()
    trainer.save_model(f"{a.out_dir}/final")
    saved_at, in_process_to_saved = time.time(), time.perf_counter() - t_start
    pred = trainer.predict(ds(test))
    y_pred = np.argmax(pred.predictions, axis=-1)
    result = {
        "test_accuracy": float(accuracy_score(pred.label_ids, y_pred)),
        "macro_f1": float(f1_score(pred.label_ids, y_pred, average="macro")),
        "train_samples_per_s": out.metrics["train_samples_per_second"],
        "train_runtime_s": out.metrics["train_runtime"],
        "saved_at": saved_at,
        "in_process_to_saved_s": in_process_to_saved,
        "threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
    }
    with open(a.result, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", required=True, help="folder with train/dev/test.jsonl")
    p.add_argument("--model-dir", required=True)
    p.add_argument("--out-dir", required=True)
    p.add_argument("--result", required=True, help="where the JSON result goes")
    p.add_argument("--lr", type=float, default=2e-5)
    p.add_argument("--epochs", type=float, default=3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--threads", type=int, required=True)
    main(p.parse_args())
