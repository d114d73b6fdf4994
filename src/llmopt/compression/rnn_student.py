"""Non-transformer students (Tang et al. 2019): a BiLSTM or a 1-D CNN (Kim 2014) over word-piece embeddings.

They read the teacher's own (usually vocabulary-trimmed) tokenizer, so every llmopt path that takes a model folder
works unchanged: `TextNetForSequenceClassification` is a transformers `PreTrainedModel` with its own
`PretrainedConfig` (model_type `llmopt_textnet`), registered with AutoConfig / AutoModelForSequenceClassification
by `register()` (called by `llmopt.models.load_classifier`), saved as safetensors, loaded without remote code,
exported to ONNX by `compression.onnx_export` and quantized by the quantize stage (ORT dynamic int8 quantizes
the LSTM, Conv, MatMul and the embedding Gather).

Padding never changes a text's logits (batch-1 latency and batched evaluation see the same model):
- BiLSTM: the backward direction is a second forward LSTM over each text reversed within its own length (a
  gather, not `pack_padded_sequence`, which ONNX export does not keep), so neither direction reads padding;
  the states of padded positions are left out of the max and mean pooling.
- CNN: padded embeddings are zeroed and each convolution is a "full" one (padding k − 1 on both sides), so a
  window running into padding sees the zeros it would see at the end of the unpadded text; windows made only of
  padding are masked before max-over-time pooling.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput

MODEL_TYPE = "llmopt_textnet"
KINDS = ("bilstm", "cnn")


class TextNetConfig(PretrainedConfig):
    """kind: bilstm (hidden units per direction, `layers` stacked) or cnn (`hidden` maps per kernel size)."""

    model_type = MODEL_TYPE

    def __init__(self, kind: Literal["bilstm", "cnn"] = "bilstm", vocab_size: int = 30522, embed_dim: int = 128,
                 hidden: int = 128, layers: int = 1, kernel_sizes: tuple[int, ...] | list[int] = (3, 4, 5),
                 dropout: float = 0.1, max_position_embeddings: int = 512, pad_token_id: int = 0,
                 **kwargs: Any) -> None:
        if kind not in KINDS:
            raise ValueError(f"TextNetConfig kind must be one of {', '.join(KINDS)}, not {kind!r}")
        self.kind, self.vocab_size, self.embed_dim = kind, vocab_size, embed_dim
        self.hidden, self.layers = hidden, layers
        self.kernel_sizes, self.dropout = list(kernel_sizes), dropout
        self.max_position_embeddings = max_position_embeddings  # the tokenizer's limit; the net has no positions
        super().__init__(pad_token_id=pad_token_id, **kwargs)
        self.hidden_size = self.feature_size  # the pooled width (what the classifier reads)

    @property
    def feature_size(self) -> int:
        if self.kind == "bilstm":
            return 4 * self.hidden  # [max; mean] of both directions
        return self.hidden * len(self.kernel_sizes)


def _reverse_within_length(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Each row's first lengths[b] positions reversed, the padding after them left in place."""
    pos = torch.arange(x.shape[1], device=x.device).unsqueeze(0)  # [1, seq]
    last = (lengths - 1).unsqueeze(1)  # [batch, 1]
    idx = torch.where(pos <= last, last - pos, pos)  # [batch, seq]
    return torch.gather(x, 1, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


class TextNetForSequenceClassification(PreTrainedModel):
    config_class = TextNetConfig
    base_model_prefix = "textnet"
    main_input_name = "input_ids"
    _supports_sdpa = False

    def __init__(self, config: TextNetConfig) -> None:
        super().__init__(config)
        self.embeddings = nn.Embedding(config.vocab_size, config.embed_dim, padding_idx=config.pad_token_id)
        self.drop = nn.Dropout(config.dropout)
        if config.kind == "bilstm":
            dropout = config.dropout if config.layers > 1 else 0.0
            self.fwd = nn.LSTM(config.embed_dim, config.hidden, config.layers, batch_first=True, dropout=dropout)
            self.bwd = nn.LSTM(config.embed_dim, config.hidden, config.layers, batch_first=True, dropout=dropout)
        else:
            self.convs = nn.ModuleList(nn.Conv1d(config.embed_dim, config.hidden, k, padding=k - 1)
                                       for k in config.kernel_sizes)
        self.classifier = nn.Sequential(nn.Linear(config.feature_size, config.feature_size // 2), nn.ReLU(),
                                        nn.Dropout(config.dropout), nn.Linear(config.feature_size // 2,
                                                                              config.num_labels))
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=0.1)
            if module.padding_idx is not None:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()
        elif isinstance(module, (nn.Linear, nn.Conv1d)):
            nn.init.xavier_uniform_(module.weight)
            nn.init.zeros_(module.bias)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embeddings = value

    def features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The pooled text vector the classifier reads: [batch, config.feature_size]."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        mask = attention_mask.unsqueeze(-1).to(self.embeddings.weight.dtype)  # [batch, seq, 1]
        x = self.drop(self.embeddings(input_ids)) * mask
        if self.config.kind == "bilstm":
            lengths = attention_mask.sum(1).clamp_min(1)
            f, _ = self.fwd(x)
            b, _ = self.bwd(_reverse_within_length(x, lengths))
            h = torch.cat([f, _reverse_within_length(b, lengths)], -1)  # [batch, seq, 2·hidden]
            h_max = (h + (mask - 1) * 1e4).amax(1)
            h_mean = (h * mask).sum(1) / mask.sum(1).clamp_min(1)
            return torch.cat([h_max, h_mean], -1)
        pooled = []
        m = mask.transpose(1, 2)  # [batch, 1, seq]
        xt = x.transpose(1, 2)  # [batch, embed, seq]
        for conv in self.convs:
            k = conv.kernel_size[0]
            valid = nn.functional.max_pool1d(nn.functional.pad(m, (k - 1, k - 1)), k, stride=1)  # any real token
            y = torch.relu(conv(xt)) + (valid - 1) * 1e4
            pooled.append(y.amax(-1))
        return torch.cat(pooled, -1)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, return_dict: bool | None = None,
                **kwargs: Any) -> SequenceClassifierOutput:
        """token_type_ids and the transformer-only flags (output_hidden_states, ...) are accepted and ignored."""
        logits = self.classifier(self.drop(self.features(input_ids, attention_mask)))
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(logits, labels, ignore_index=-100)
        return SequenceClassifierOutput(loss=loss, logits=logits)


def register() -> None:
    """Make AutoConfig / AutoModelForSequenceClassification know `llmopt_textnet` (idempotent, no remote code)."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    try:
        AutoConfig.register(MODEL_TYPE, TextNetConfig)
    except ValueError:  # already registered
        pass
    try:
        AutoModelForSequenceClassification.register(TextNetConfig, TextNetForSequenceClassification)
    except ValueError:
        pass


def is_textnet(config: Any) -> bool:
    return getattr(config, "model_type", None) == MODEL_TYPE


def textnet_student(kind: str, tokenizer: Any, labels: list[str], *, embed_dim: int, hidden: int, layers: int = 1,
                    kernel_sizes: list[int] | None = None, dropout: float = 0.1,
                    teacher_embeddings: torch.Tensor | None = None) -> TextNetForSequenceClassification:
    """A randomly initialised BiLSTM/CNN student for `tokenizer`'s vocabulary; with `teacher_embeddings`
    ([vocab, teacher width], rows in the tokenizer's id order) its embedding table starts from their principal
    components (`pca_embeddings`)."""
    cfg = TextNetConfig(kind=kind, vocab_size=len(tokenizer), embed_dim=embed_dim, hidden=hidden, layers=layers,
                        kernel_sizes=kernel_sizes or [3, 4, 5], dropout=dropout,
                        pad_token_id=tokenizer.pad_token_id or 0, num_labels=len(labels),
                        id2label=dict(enumerate(labels)), label2id={lab: i for i, lab in enumerate(labels)},
                        max_position_embeddings=int(min(getattr(tokenizer, "model_max_length", 512) or 512, 512)))
    model = TextNetForSequenceClassification(cfg)
    if teacher_embeddings is not None:
        with torch.no_grad():
            model.embeddings.weight.copy_(pca_embeddings(teacher_embeddings, embed_dim))
            model.embeddings.weight[cfg.pad_token_id].zero_()
    return model


def pca_embeddings(weight: torch.Tensor, dim: int) -> torch.Tensor:
    """The rows of `weight` projected on their top `dim` principal components, scaled to std 0.1 per column
    (extra columns, when dim exceeds the teacher's width, random at that scale)."""
    w = weight.detach().float()
    w = w - w.mean(0, keepdim=True)
    k = min(dim, w.shape[1], w.shape[0])
    _, _, v = torch.linalg.svd(w, full_matrices=False)
    out = w @ v[:k].T
    out = out / out.std(0, keepdim=True).clamp_min(1e-6) * 0.1
    if k < dim:
        out = torch.cat([out, torch.randn(w.shape[0], dim - k) * 0.1], 1)
    return out
