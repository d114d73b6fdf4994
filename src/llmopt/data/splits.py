"""Stratified splitting and checks that a labelled dataset is usable for classification."""

from __future__ import annotations

import random
from collections import Counter, defaultdict

from llmopt.data.readers import Example
from llmopt.errors import DataError


def stratified_split(examples: list[Example], fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """Split into (rest, held_out) with `fraction` of every label held out, seeded."""
    by_label: dict[str, list[Example]] = defaultdict(list)
    for ex in examples:
        by_label[ex.label].append(ex)
    rng = random.Random(seed)
    rest: list[Example] = []
    held: list[Example] = []
    for label in sorted(by_label):
        group = by_label[label][:]
        rng.shuffle(group)
        k = round(len(group) * fraction)
        if fraction > 0 and len(group) >= 2:
            k = min(max(k, 1), len(group) - 1)
        held.extend(group[:k])
        rest.extend(group[k:])
    rng.shuffle(rest)
    rng.shuffle(held)
    return rest, held


def stratified_subsample(examples: list[Example], n: int, seed: int) -> list[Example]:
    if n >= len(examples):
        return examples
    _, keep = stratified_split(examples, n / len(examples), seed)
    return keep


def check_splits(splits: dict[str, list[Example]], source: str) -> list[str]:
    """Validate splits; return the label set (sorted) taken from train."""
    for name, rows in splits.items():
        if not rows:
            raise DataError(f"{source}: the {name} split is empty. Add rows or change the split fractions.")
    labels = sorted(Counter(ex.label for ex in splits["train"]))
    if len(labels) < 2:
        raise DataError(
            f"{source}: the train split has one class only ({labels[0]!r}); classification needs at least two."
        )
    known = set(labels)
    for name in ("dev", "test"):
        for ex in splits.get(name, []):
            if ex.label not in known:
                raise DataError(
                    f"{ex.where}: label {ex.label!r} in the {name} split never occurs in train "
                    f"(train labels: {', '.join(labels)}). Fix the label or add train examples of it."
                )
    return labels
