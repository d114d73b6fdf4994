"""Structured pruning that physically shrinks a BERT-family encoder: FFN neurons and whole layers.

Importance is gradient-based (Michel et al. 2019): a mask of ones multiplies each head's output and each
FFN neuron; |dL/dmask| summed over batches ranks them. Heads are scored and reported but not removed:
transformers 5 dropped `prune_heads`/`config.pruned_heads`, and BertConfig ties head size to
hidden_size / num_attention_heads, so a model with fewer heads of the same size cannot be saved in a
form `from_pretrained` reloads. FFN width (intermediate_size) and depth (num_hidden_layers) can.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from llmopt.errors import ModelError


def encoder_layers(model: Any) -> Any:
    base = getattr(model, model.base_model_prefix, None)
    layers = getattr(getattr(base, "encoder", None), "layer", None)
    if layers is None or not hasattr(layers[0], "intermediate"):
        raise ModelError(f"structured pruning supports BERT-family encoders (encoder.layer[i].intermediate); "
                         f"got {type(model).__name__}. Use sparsity: (unstructured) instead.")
    return layers


def _batches(tokenizer: Any, texts: list[str], labels: list[int], max_length: int, size: int):
    import torch

    for s in range(0, len(texts), size):
        enc = tokenizer(texts[s : s + size], truncation=True, max_length=max_length, padding=True, return_tensors="pt")
        yield enc, torch.tensor(labels[s : s + size])


def importance(model: Any, tokenizer: Any, texts: list[str], labels: list[int], max_length: int = 128,
               batch_size: int = 32) -> tuple[np.ndarray, list[np.ndarray]]:
    """(heads [layers × heads], FFN neurons per layer): expected |dL/dmask| over the given rows."""
    import torch

    layers = encoder_layers(model)
    cfg = model.config
    n_heads, head_dim = cfg.num_attention_heads, cfg.hidden_size // cfg.num_attention_heads
    head_masks = [torch.ones(n_heads, requires_grad=True) for _ in layers]
    ffn_masks = [torch.ones(layer.intermediate.dense.out_features, requires_grad=True) for layer in layers]
    hooks = []
    for layer, hm, fm in zip(layers, head_masks, ffn_masks):
        hooks.append(layer.attention.output.dense.register_forward_pre_hook(
            lambda mod, args, m=hm: (args[0] * m.repeat_interleave(head_dim),)))
        hooks.append(layer.output.dense.register_forward_pre_hook(lambda mod, args, m=fm: (args[0] * m,)))
    head_imp = np.zeros((len(layers), n_heads))
    ffn_imp = [np.zeros(m.shape[0]) for m in ffn_masks]
    was_training = model.training
    model.eval()
    try:
        for enc, y in _batches(tokenizer, texts, labels, max_length, batch_size):
            loss = torch.nn.functional.cross_entropy(model(**enc).logits, y)
            grads = torch.autograd.grad(loss, head_masks + ffn_masks)
            for i in range(len(layers)):
                head_imp[i] += grads[i].abs().numpy()
                ffn_imp[i] += grads[len(layers) + i].abs().numpy()
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return head_imp, ffn_imp


def prune_ffn(model: Any, keep: int, scores: list[np.ndarray]) -> list[list[int]]:
    """Keep the `keep` highest-scoring FFN neurons in every layer (same width everywhere, so the config says it)."""
    import torch

    layers = encoder_layers(model)
    kept_all = []
    for layer, score in zip(layers, scores):
        idx = torch.tensor(sorted(np.argsort(-score)[:keep].tolist()))
        up, down = layer.intermediate.dense, layer.output.dense
        new_up = torch.nn.Linear(up.in_features, keep, bias=up.bias is not None)
        new_down = torch.nn.Linear(keep, down.out_features, bias=down.bias is not None)
        with torch.no_grad():
            new_up.weight.copy_(up.weight[idx])
            if up.bias is not None:
                new_up.bias.copy_(up.bias[idx])
            new_down.weight.copy_(down.weight[:, idx])
            if down.bias is not None:
                new_down.bias.copy_(down.bias)
        layer.intermediate.dense, layer.output.dense = new_up, new_down
        kept_all.append(idx.tolist())
    model.config.intermediate_size = keep
    return kept_all


def layer_drop_losses(model: Any, tokenizer: Any, texts: list[str], labels: list[int], max_length: int = 128) -> list[float]:
    """Dev loss with each encoder layer skipped in turn (higher = that layer matters more)."""
    import torch

    layers = encoder_layers(model)
    model.eval()
    out = []
    for i in range(len(layers)):
        hook = layers[i].register_forward_hook(_skip, with_kwargs=True)
        total, n = 0.0, 0
        with torch.inference_mode():
            for enc, y in _batches(tokenizer, texts, labels, max_length, 64):
                total += float(torch.nn.functional.cross_entropy(model(**enc).logits, y, reduction="sum"))
                n += len(y)
        hook.remove()
        out.append(total / max(n, 1))
    return out


def _skip(mod: Any, args: tuple, kwargs: dict, output: Any) -> Any:
    """Forward hook that makes a layer the identity (its input hidden states pass through)."""
    h = args[0] if args else kwargs["hidden_states"]
    return (h,) + tuple(output[1:]) if isinstance(output, tuple) else h


def choose_layers(drop_losses: list[float], keep: int) -> list[int]:
    """The `keep` layers whose removal hurts most, in their original order."""
    return sorted(np.argsort(-np.asarray(drop_losses))[:keep].tolist())
