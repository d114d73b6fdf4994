"""Causal-LM training pieces: packed text blocks, chat examples masked to their responses, a padding collator,
and LoRA (peft) wrapping and merging. The trainer itself is `llmopt.training.trainer.train_causal_lm`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from llmopt.errors import DataError, ModelError

IGNORE = -100  # label of a token the loss skips


# ---------------------------------------------------------------- causal_lm: packing


def pack_documents(tokenizer: Any, docs: list[str], block_size: int) -> list[dict[str, list[int]]]:
    """Token streams of the documents, EOS after each, cut into blocks of `block_size` (the last may be shorter);
    labels = input_ids (the model shifts them)."""
    if block_size < 2:
        raise ValueError("block_size must be at least 2")
    eos = tokenizer.eos_token_id
    stream: list[int] = []
    for s in range(0, len(docs), 512):
        for ids in tokenizer(docs[s:s + 512], add_special_tokens=False, verbose=False)["input_ids"]:
            stream.extend(ids)
            stream.append(eos)
    blocks = []
    for s in range(0, len(stream), block_size):
        ids = stream[s:s + block_size]
        if len(ids) >= 2:  # a 1-token block has no next token to predict
            blocks.append({"input_ids": ids, "attention_mask": [1] * len(ids), "labels": list(ids)})
    return blocks


# ---------------------------------------------------------------- sft: chat examples


@dataclass
class SftEncoding:
    examples: list[dict[str, list[int]]]
    truncated: int = 0  # examples cut to max_length (prompt tokens dropped from the left)
    response_cut: int = 0  # of those, examples whose last response alone exceeded max_length
    notes: list[str] = field(default_factory=list)


def _render(tokenizer: Any, messages: list[dict], generation_prompt: bool, where: str) -> str:
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
    except Exception as e:  # jinja raises many kinds
        raise DataError(f"{where}: the chat template failed to render this conversation ({type(e).__name__}: {e}).") from None


def encode_chat(tokenizer: Any, messages: list[dict], where: str = "example") -> tuple[list[int], list[int]]:
    """Token ids of the rendered conversation and labels that keep only the assistant turns' tokens (each up to
    and including its closing EOS, e.g. <|im_end|>); everything else is -100.

    The text is tokenized piece by piece at the turn boundaries, so a prompt's tokens are exactly the tokens the
    model sees before it generates (the chat template rendered with the generation prompt).
    """
    eos = tokenizer.eos_token_id
    ids: list[int] = []
    labels: list[int] = []
    done = ""  # the text already tokenized

    def add(text: str, learn: bool) -> None:
        piece = tokenizer(text, add_special_tokens=False)["input_ids"] if text else []
        if learn and eos in piece:  # the closing EOS is learnt, the newline after it is not
            cut = len(piece) - piece[::-1].index(eos)
            ids.extend(piece)
            labels.extend(piece[:cut] + [IGNORE] * (len(piece) - cut))
            return
        ids.extend(piece)
        labels.extend(piece if learn else [IGNORE] * len(piece))

    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        prompt = _render(tokenizer, messages[:i], True, where)
        full = _render(tokenizer, messages[:i + 1], False, where)
        if not prompt.startswith(done) or not full.startswith(prompt):
            raise ModelError(f"{where}: the chat template does not render a conversation as a prefix of its "
                             "continuation, so prompt tokens cannot be told from response tokens.")
        add(prompt[len(done):], learn=False)
        add(full[len(prompt):], learn=True)
        done = full
    if not any(lab != IGNORE for lab in labels):
        raise DataError(f"{where}: no assistant response tokens to learn from.")
    return ids, labels


def encode_sft(tokenizer: Any, conversations: list[list[dict]], max_length: int, where: str = "data") -> SftEncoding:
    """Every conversation as input_ids/attention_mask/labels (loss on the assistant turns only).

    Longer than max_length: tokens are cut from the left (the prompt goes first, the final response stays);
    a final response longer than max_length on its own keeps its first max_length tokens.
    """
    enc = SftEncoding([])
    for n, msgs in enumerate(conversations):
        ids, labels = encode_chat(tokenizer, msgs, f"{where}, example {n + 1}")
        if len(ids) > max_length:
            enc.truncated += 1
            last = next(i for i in range(len(labels) - 1, -1, -1) if labels[i] != IGNORE)
            first = last  # the start of the last learnt span
            while first > 0 and labels[first - 1] != IGNORE:
                first -= 1
            if last + 1 - first > max_length:
                enc.response_cut += 1
                ids, labels = ids[first:first + max_length], labels[first:first + max_length]
            else:
                end = min(len(ids), max(last + 1, max_length))
                ids, labels = ids[end - max_length:end], labels[end - max_length:end]
        enc.examples.append({"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels})
    if enc.truncated:
        enc.notes.append(f"{enc.truncated} of {len(conversations)} SFT examples were longer than max_length "
                         f"{max_length}: their prompts were cut from the left"
                         + (f" ({enc.response_cut} responses cut too)" if enc.response_cut else "") + ".")
    return enc


class CausalCollator:
    """Right-pads a batch: input_ids with the pad token, attention_mask with 0, labels with -100."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad = pad_token_id

    def __call__(self, features: list[dict]) -> dict:
        import torch

        width = max(len(f["input_ids"]) for f in features)

        def col(key: str, fill: int) -> Any:
            return torch.tensor([list(f[key]) + [fill] * (width - len(f[key])) for f in features], dtype=torch.long)

        return {"input_ids": col("input_ids", self.pad), "attention_mask": col("attention_mask", 0),
                "labels": col("labels", IGNORE)}


def token_counts(examples: list[dict]) -> dict[str, int]:
    """Tokens in the examples and tokens the loss is on."""
    return {"tokens": sum(len(e["input_ids"]) for e in examples),
            "loss_tokens": sum(sum(1 for x in e["labels"][1:] if x != IGNORE) for e in examples)}


# ---------------------------------------------------------------- LoRA


def linear_module_names(model: Any) -> list[str]:
    """The distinct last-name parts of the model's nn.Linear modules (what LoRA target_modules match)."""
    import torch

    return sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules()
                   if isinstance(m, torch.nn.Linear) and name})


def add_lora(model: Any, r: int, alpha: float, dropout: float, target_modules: list[str], where: str = "lora") -> Any:
    """The model wrapped by peft with LoRA adapters on `target_modules`; a target matching no Linear is a ModelError."""
    from peft import LoraConfig, get_peft_model

    names = linear_module_names(model)
    missing = [t for t in target_modules if t not in names]
    if missing:
        raise ModelError(f"{where}.target_modules: {', '.join(repr(t) for t in missing)} match(es) no Linear module "
                         f"of this model. Its Linear modules are: {', '.join(names)}.")
    cfg = LoraConfig(task_type="CAUSAL_LM", r=r, lora_alpha=alpha, lora_dropout=dropout,
                     target_modules=list(target_modules), bias="none")
    return get_peft_model(model, cfg)


def trainable_parameters(model: Any) -> dict[str, float]:
    """Trainable and total parameter counts and the trainable share."""
    total = sum(p.numel() for p in model.parameters())
    train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"trainable_params": int(train), "total_params": int(total), "trainable_share": train / max(total, 1)}


def merge_lora(peft_model: Any) -> Any:
    """The base model with the LoRA updates folded into its weights (peft merge_and_unload)."""
    return peft_model.merge_and_unload()


def mean_nll(model: Any, examples: list[dict], pad_token_id: int, batch_size: int = 8) -> dict[str, float]:
    """Token-weighted mean negative log-likelihood of the labelled next tokens (labels != -100) over all examples,
    and its perplexity exp(nll). The Trainer's eval_loss is instead a mean of per-batch means."""
    import math

    import torch

    collate = CausalCollator(pad_token_id)
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        with torch.no_grad():
            for s in range(0, len(examples), batch_size):
                batch = collate(examples[s:s + batch_size])
                logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
                target = batch["labels"][:, 1:]
                nll = torch.nn.functional.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]),
                                                        target.reshape(-1), ignore_index=IGNORE, reduction="sum")
                total += float(nll)
                count += int((target != IGNORE).sum())
    finally:
        model.train(was_training)
    loss = total / max(count, 1)
    return {"loss": loss, "perplexity": math.exp(loss) if loss < 50 else float("inf"), "tokens": count}
