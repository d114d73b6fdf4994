"""Masked-LM (continued pretraining of an encoder) pieces: documents cut into model-sized chunks, the masking
collator (BERT's rule: 15% of the non-special tokens chosen; of those 80% become [MASK], 10% a random token, 10%
stay), a held-out set masked once with a fixed seed so dev losses before and after training compare the same
positions, and loading / saving a masked-LM folder that later stages take as an encoder base.

The trainer is `llmopt.training.trainer.train_masked_lm`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from llmopt.errors import ModelError

IGNORE = -100  # label of a position the loss skips (every unmasked token)
MLM_PROBABILITY = 0.15


# ---------------------------------------------------------------- the model


def check_masked_lm_base(base: Path, tokenizer: Any, where: str) -> None:
    """A ModelError unless `base` is an encoder a masked-LM head fits (not a causal LM; a [MASK] token)."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

    from llmopt.llm import is_causal_lm
    from llmopt.models import display_path

    if is_causal_lm(base):
        raise ModelError(f"{where}: model {display_path(base)} is a causal LM; task mlm (masked-LM continued "
                         "pretraining) needs an encoder such as {builtin: minilm}. For a causal LM use task causal_lm.")
    model_type = AutoConfig.from_pretrained(str(base), trust_remote_code=False).model_type
    if model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        raise ModelError(f"{where}: model {display_path(base)} (model_type {model_type}) has no masked-LM form in "
                         "transformers; task mlm needs an encoder such as BERT / MiniLM / RoBERTa.")
    if tokenizer.mask_token_id is None:
        raise ModelError(f"{where}: the tokenizer of {display_path(base)} has no mask token, so tokens cannot be "
                         "masked; task mlm needs an encoder tokenizer with [MASK].")


def load_masked_lm(base: Path, allow_pickle: bool = False) -> tuple[Any, list[str]]:
    """AutoModelForMaskedLM from a checked safetensors folder, and the names of the tensors it had to initialise
    (the masked-LM head of an encoder saved without one, e.g. the bundled sentence-transformers MiniLM)."""
    import transformers
    from transformers import AutoModelForMaskedLM

    from llmopt.models import check_model_dir

    check_model_dir(base, need_tokenizer=False, allow_pickle=allow_pickle)
    prev = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        model, info = AutoModelForMaskedLM.from_pretrained(str(base), trust_remote_code=False, use_safetensors=True,
                                                           output_loading_info=True)
    finally:
        transformers.logging.set_verbosity(prev)
    return model, sorted(info.get("missing_keys") or [])


def _checkpoint_tensors(folder: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    out: dict[str, Any] = {}
    for f in sorted(Path(folder).glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


def encoder_tensors_missing(model: Any, base: Path) -> dict[str, Any]:
    """Tensors of the base checkpoint's encoder that the masked-LM model does not hold (BERT's pooler: the
    masked-LM class builds its encoder without one), named as in the model's state dict."""
    import torch
    from transformers import AutoModel

    prefix = model.base_model_prefix
    with torch.device("meta"):  # the full encoder's tensor names, without allocating it
        encoder = set(AutoModel.from_config(model.config).state_dict())
    own = model.state_dict()
    out = {}
    for k, v in _checkpoint_tensors(base).items():
        inner = k.removeprefix(f"{prefix}.")
        if inner in encoder and f"{prefix}.{inner}" not in own:
            out[f"{prefix}.{inner}"] = v
    return out


def save_masked_lm(model: Any, tokenizer: Any, out_dir: Path, base: Path, inference: dict[str, Any]) -> list[str]:
    """The trained masked-LM model (safetensors) + tokenizer + llmopt_inference.json, written atomically, with the
    base encoder's tensors the masked-LM class drops (the pooler) carried over, so the folder loads as a
    classifier base (finetune, distill) without a newly initialised pooler. Returns the names carried over."""
    import shutil

    from llmopt.fsutil import atomic_replace_dir, atomic_write_json
    from llmopt.models import INFERENCE_FILE

    out_dir = Path(out_dir)
    extra = encoder_tensors_missing(model, base)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    state = {**model.state_dict(), **{k: v.contiguous() for k, v in extra.items()}}
    model.save_pretrained(str(tmp), state_dict=state)
    tokenizer.save_pretrained(str(tmp))
    atomic_write_json(tmp / INFERENCE_FILE, {k: inference[k] for k in ("max_length", "truncation")})
    atomic_replace_dir(tmp, out_dir)
    return sorted(extra)


# ---------------------------------------------------------------- the data


def encode_documents(tokenizer: Any, docs: list[str], max_length: int) -> list[dict[str, list[int]]]:
    """Every document as one or more chunks of at most `max_length` tokens, each wrapped in the tokenizer's
    special tokens ([CLS] … [SEP]); `doc` is the document's index (held-out measures resample documents)."""
    if max_length < 3:
        raise ValueError(f"max_length {max_length} leaves no room for text between the special tokens")
    out = []
    for s in range(0, len(docs), 512):
        enc = tokenizer(docs[s:s + 512], truncation=True, max_length=max_length, return_overflowing_tokens=True,
                        return_special_tokens_mask=True, verbose=False)
        for ids, special, j in zip(enc["input_ids"], enc["special_tokens_mask"], enc["overflow_to_sample_mapping"]):
            out.append({"input_ids": list(ids), "attention_mask": [1] * len(ids),
                        "special_tokens_mask": list(special), "doc": s + int(j)})
    return out


class MlmCollator:
    """Pads a batch; examples without labels are masked by transformers' DataCollatorForLanguageModeling
    (mlm_probability of the non-special tokens chosen; 80% [MASK], 10% random token, 10% unchanged; labels -100
    elsewhere); examples that carry labels (a held-out set masked once, `mask_fixed`) are only padded."""

    def __init__(self, tokenizer: Any, probability: float = MLM_PROBABILITY, seed: int | None = None) -> None:
        from transformers import DataCollatorForLanguageModeling

        self.pad = tokenizer.pad_token_id
        self.mask = DataCollatorForLanguageModeling(tokenizer, mlm=True, mlm_probability=probability,
                                                    mask_replace_prob=0.8, random_replace_prob=0.1, seed=seed)

    def __call__(self, features: list[dict]) -> dict:
        features = [{k: v for k, v in f.items() if k != "doc"} for f in features]
        if "labels" not in features[0]:
            return self.mask([{k: f[k] for k in ("input_ids", "attention_mask", "special_tokens_mask")}
                              for f in features])
        return pad_examples(features, self.pad)


def masked_positions_head(model: Any) -> Any:
    """The module mapping the encoder's hidden states to vocabulary logits (BERT's `cls`, RoBERTa's `lm_head`), so
    training can score only the masked positions; None for another layout (the full forward is used)."""
    for name in ("cls", "lm_head"):
        head = getattr(model, name, None)
        if head is not None and callable(head):
            return head
    return None


def masked_lm_trainer() -> type:
    """A transformers Trainer whose training loss runs the masked-LM head only at the masked positions (15% of the
    tokens): the same mean cross-entropy as the model's own loss, without vocabulary logits for every token (the
    head is about half of MiniLM's compute). Evaluation keeps the model's full forward."""
    import torch
    from transformers import Trainer

    class MaskedLMTrainer(Trainer):
        def compute_loss(self, model: Any, inputs: dict, return_outputs: bool = False,
                         num_items_in_batch: Any = None):
            inner = getattr(model, "module", model)  # DDP / DataParallel wrap the model
            head = masked_positions_head(inner)
            if return_outputs or head is None:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            labels = inputs["labels"]
            hidden = inner.base_model(input_ids=inputs["input_ids"],
                                      attention_mask=inputs["attention_mask"]).last_hidden_state
            chosen = labels != IGNORE
            logits = head(hidden[chosen])
            return torch.nn.functional.cross_entropy(logits.float(), labels[chosen])

    return MaskedLMTrainer


def pad_examples(features: list[dict], pad_token_id: int) -> dict:
    """Right-padded input_ids (pad token), attention_mask (0) and labels (-100) of pre-masked examples."""
    import torch

    width = max(len(f["input_ids"]) for f in features)

    def col(key: str, fill: int) -> Any:
        return torch.tensor([list(f[key]) + [fill] * (width - len(f[key])) for f in features], dtype=torch.long)

    return {"input_ids": col("input_ids", pad_token_id), "attention_mask": col("attention_mask", 0),
            "labels": col("labels", IGNORE)}


def mask_fixed(tokenizer: Any, examples: list[dict], seed: int, probability: float = MLM_PROBABILITY) -> list[dict]:
    """The examples masked once by the training collator's rule with a fixed seed (input_ids with the masks,
    labels = the original token where masked, -100 elsewhere); `doc` kept."""
    collate = MlmCollator(tokenizer, probability, seed=seed)
    out = []
    for s in range(0, len(examples), 256):
        chunk = examples[s:s + 256]
        batch = collate([{k: e[k] for k in ("input_ids", "attention_mask", "special_tokens_mask")} for e in chunk])
        for i, e in enumerate(chunk):
            n = len(e["input_ids"])
            out.append({"input_ids": batch["input_ids"][i, :n].tolist(), "attention_mask": [1] * n,
                        "labels": batch["labels"][i, :n].tolist(), "doc": e["doc"]})
    return out


def masked_nll(model: Any, examples: list[dict], pad_token_id: int, batch_size: int = 64) -> tuple[list, list, list]:
    """Per pre-masked example: its `doc`, the summed NLL of its masked tokens and how many there are."""
    import torch

    docs, nlls, toks = [], [], []
    was = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for s in range(0, len(examples), batch_size):
                chunk = examples[s:s + batch_size]
                b = pad_examples(chunk, pad_token_id)
                logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits.float()
                nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), b["labels"], ignore_index=IGNORE,
                                                        reduction="none")
                docs += [e["doc"] for e in chunk]
                nlls += nll.sum(1).double().tolist()
                toks += (b["labels"] != IGNORE).sum(1).tolist()
    finally:
        model.train(was)
    return docs, nlls, toks


def mean_masked_nll(model: Any, examples: list[dict], pad_token_id: int, batch_size: int = 64) -> dict[str, float]:
    """Token-weighted mean NLL of the masked tokens over all pre-masked examples (the Trainer's eval_loss is
    instead a mean of per-batch means)."""
    _, nlls, toks = masked_nll(model, examples, pad_token_id, batch_size)
    return {"loss": sum(nlls) / max(sum(toks), 1), "tokens": int(sum(toks))}
