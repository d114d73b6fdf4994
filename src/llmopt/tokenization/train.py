"""Train a BPE, Unigram or WordPiece tokenizer with Hugging Face `tokenizers` and save it as a folder that
`AutoTokenizer.from_pretrained` loads (tokenizer.json + tokenizer_config.json)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmopt.errors import DataError
from llmopt.tokenization.config import BYTE_ALPHABET, TokenizerTrainConfig

if TYPE_CHECKING:  # pragma: no cover
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

BYTE_PIECES = [f"<0x{b:02X}>" for b in range(256)]
ROLES = {"pad_token": ("[PAD]", "<pad>"), "unk_token": ("[UNK]", "<unk>"), "cls_token": ("[CLS]", "<s>"),
         "sep_token": ("[SEP]", "</s>"), "mask_token": ("[MASK]", "<mask>")}


def _pipeline(cfg: TokenizerTrainConfig) -> "Tokenizer":
    """An untrained tokenizer with the configured normalizer, pre-tokenizer and decoder."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

    unk = cfg.unk_token
    model = {"bpe": lambda: models.BPE(unk_token=unk, byte_fallback=cfg.bytes == "byte_fallback"),
             "unigram": lambda: models.Unigram(),
             "wordpiece": lambda: models.WordPiece(unk_token=unk, continuing_subword_prefix="##")}[cfg.algorithm]()
    tok = Tokenizer(model)
    norm = ([normalizers.NFKC()] if cfg.nfkc else []) + ([normalizers.Lowercase()] if cfg.lowercase else [])
    if norm:
        tok.normalizer = normalizers.Sequence(norm)
    # a punctuation mark or digit is its own pre-token, keeping the word boundary before it (▁, / Ġ,) so that
    # "word , word" does not spend a lone-space token on every mark
    mark = " " if cfg.bytes == "byte_level" else "▁"
    alts = ([f"[^\\w\\s{mark}]"] if cfg.split_punctuation else []) + (["\\d"] if cfg.split_digits else [])
    splits = [pre_tokenizers.Split(Regex(f"{mark}?(?:{'|'.join(alts)})"), "isolated")] if alts else []
    if cfg.bytes == "byte_level":  # GPT-2 style: text → bytes shown as printable characters; spaces kept as Ġ
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            splits + [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
        tok.decoder = decoders.ByteLevel()
    else:  # SentencePiece style: a space becomes ▁ at the start of the next word, so decoding restores spaces
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")] + splits)
        tok.decoder = decoders.Sequence(
            ([decoders.Replace("##", "")] if cfg.algorithm == "wordpiece" else [])
            + [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    return tok


def _trainer(cfg: TokenizerTrainConfig, vocab_size: int) -> Any:
    from tokenizers import pre_tokenizers, trainers

    alphabet = pre_tokenizers.ByteLevel.alphabet() if cfg.bytes == "byte_level" else []
    common = dict(vocab_size=vocab_size, special_tokens=list(cfg.special_tokens), show_progress=False)
    if cfg.algorithm == "bpe":
        return trainers.BpeTrainer(min_frequency=cfg.min_frequency, initial_alphabet=alphabet, **common)
    if cfg.algorithm == "wordpiece":
        return trainers.WordPieceTrainer(min_frequency=cfg.min_frequency, continuing_subword_prefix="##", **common)
    return trainers.UnigramTrainer(unk_token=cfg.unk_token, initial_alphabet=alphabet, **common)


def alphabet_size(tok: "Tokenizer", texts: list[str], cfg: TokenizerTrainConfig) -> int:
    """Distinct characters the model must hold as single pieces (after normalization; ▁ included), or an upper
    bound on them where that bound already fits the vocabulary."""
    if cfg.bytes == "byte_level":
        return BYTE_ALPHABET
    chars: set[str] = {"▁"}
    raw = set().union(*map(set, texts))
    if tok.normalizer is None:
        return len((raw | chars) - {"\n", " "})
    if 18 * len(raw) + len(cfg.special_tokens) + BYTE_ALPHABET < cfg.vocab_size:
        return 18 * len(raw)  # a bound: NFKC maps one character to at most 18 (U+FDFA); no pass needed
    for i in range(0, len(texts), 2000):
        block = "\n".join(texts[i:i + 2000])
        chars.update(tok.normalizer.normalize_str(block) if tok.normalizer else block)
    chars.discard("\n")
    chars.discard(" ")
    return len(chars)


def train_tokenizer(texts: Iterable[str], cfg: TokenizerTrainConfig, where: str = "tokenizer") -> "Tokenizer":
    """Train on `texts`; `where` names the config in errors (an empty corpus, a vocabulary below the alphabet)."""
    texts = [t for t in texts if t and t.strip()]
    if not texts:
        raise DataError(f"{where}: the training corpus is empty (no non-blank text in the data stage's train split "
                        "or in texts:). Give it text to learn from.")
    tok = _pipeline(cfg)
    n_bytes = BYTE_ALPHABET if cfg.bytes == "byte_fallback" else 0
    floor = alphabet_size(tok, texts, cfg) + len(cfg.special_tokens) + n_bytes
    if cfg.vocab_size < floor:
        raise DataError(f"{where}.vocab_size: {cfg.vocab_size} is smaller than the corpus alphabet plus special "
                        f"tokens{' plus 256 byte pieces' if n_bytes else ''} ({floor}). Raise vocab_size to at "
                        f"least {floor}.")
    tok.train_from_iterator(texts, trainer=_trainer(cfg, cfg.vocab_size - n_bytes), length=len(texts))
    if n_bytes:
        tok = _add_byte_pieces(tok)
    _add_post_processor(tok, cfg)
    return tok


def _add_byte_pieces(tok: "Tokenizer") -> "Tokenizer":
    """Append the 256 <0xNN> pieces byte_fallback decodes to (Unigram: with the lowest scores)."""
    from tokenizers import Tokenizer

    spec = json.loads(tok.to_str())
    model = spec["model"]
    if model["type"] == "BPE":
        vocab = model["vocab"]
        top = max(max(vocab.values()), *(a["id"] for a in spec["added_tokens"])) + 1
        for i, piece in enumerate(p for p in BYTE_PIECES if p not in vocab):
            vocab[piece] = top + i
    else:  # Unigram
        low = min(s for _, s in model["vocab"]) - 10.0
        have = {p for p, _ in model["vocab"]}
        model["vocab"] += [[p, low] for p in BYTE_PIECES if p not in have]
        model["byte_fallback"] = True
    return Tokenizer.from_str(json.dumps(spec))


def _add_post_processor(tok: "Tokenizer", cfg: TokenizerTrainConfig) -> None:
    """[CLS] text [SEP] (or <s> … </s>) when both tokens are among the special tokens, as an encoder expects."""
    from tokenizers import processors

    cls = next((t for t in cfg.special_tokens if t in ROLES["cls_token"]), None)
    sep = next((t for t in cfg.special_tokens if t in ROLES["sep_token"]), None)
    if cls and sep:
        ids = [(cls, tok.token_to_id(cls)), (sep, tok.token_to_id(sep))]
        tok.post_processor = processors.TemplateProcessing(single=f"{cls} $A {sep}",
                                                           pair=f"{cls} $A {sep} $B:1 {sep}:1", special_tokens=ids)


def to_fast(tok: "Tokenizer", special_tokens: list[str], model_max_length: int = 512) -> "PreTrainedTokenizerFast":
    """Wrap a trained tokenizer for transformers, with pad/unk/cls/sep/mask roles set from the special tokens."""
    from transformers import PreTrainedTokenizerFast

    roles = {role: t for role, names in ROLES.items() for t in special_tokens if t in names}
    return PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=model_max_length, **roles)


def save_tokenizer(tok: "Tokenizer", special_tokens: list[str], out_dir: Path) -> Path:
    """Write tokenizer.json + tokenizer_config.json atomically into `out_dir` (loads with AutoTokenizer)."""
    import os
    import shutil

    from llmopt.fsutil import atomic_replace_dir

    out_dir = Path(out_dir)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    to_fast(tok, special_tokens).save_pretrained(str(tmp))
    cfg_file = tmp / "tokenizer_config.json"  # the class name transformers 4 knows too (5 aliases it)
    cfg_file.write_text(json.dumps({**json.loads(cfg_file.read_text(encoding="utf-8")),
                                    "tokenizer_class": "PreTrainedTokenizerFast"}, indent=2), encoding="utf-8")
    atomic_replace_dir(tmp, out_dir)
    return out_dir
