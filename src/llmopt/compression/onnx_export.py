"""Export a Hugging Face classifier to ONNX, fuse it for ONNX Runtime, and quantize it.

An ONNX model folder holds `model.onnx`, `config.json` (with id2label), the tokenizer files,
`onnx_model.json` (scheme, parameter count of the source model) and, when the source has one,
`llmopt_inference.json` (the max_length and truncation it was trained with). No pickle anywhere.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from llmopt.compression.schemes import SCHEMES
from llmopt.errors import ModelError

META = "onnx_model.json"
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer.model")


def is_onnx_dir(path: Path) -> bool:
    return (Path(path) / "model.onnx").is_file()


def check_onnx_dir(path: Path) -> Path:
    """Fail clearly unless `path` holds model.onnx, a tokenizer and a config.json with id2label."""
    path = Path(path)
    if not (path / "model.onnx").is_file():
        raise ModelError(f"{path}: no model.onnx; export one with a quantize stage.")
    cfg = path / "config.json"
    if not cfg.is_file() or "id2label" not in json.loads(cfg.read_text(encoding="utf-8")):
        raise ModelError(f"{path}: an ONNX model folder needs config.json with id2label beside model.onnx.")
    if not any((path / f).is_file() for f in TOKENIZER_FILES):
        raise ModelError(f"{path}: no tokenizer files (tokenizer.json / vocab.txt) beside model.onnx.")
    return path


def input_names(model: Any, tokenizer: Any) -> list[str]:
    """The tokenizer outputs that the model's forward accepts, in forward-signature order."""
    import inspect

    accepted = list(inspect.signature(model.forward).parameters)
    produced = set(tokenizer("a b", return_tensors="pt").keys())
    return [n for n in accepted if n in produced]


def export_fp32(src: Path, out_dir: Path, opset: int = 17, allow_pickle: bool = False) -> dict[str, Any]:
    """Export the classifier in `src` to out_dir/model.onnx (dynamic batch and sequence axes)."""
    import torch

    from llmopt.models import INFERENCE_FILE, load_classifier, load_tokenizer

    tok = load_tokenizer(src)
    # eager attention exports as plain MatMul/Softmax, which ORT's BERT optimizer fuses into Attention
    model = load_classifier(src, allow_pickle=allow_pickle, attn_implementation="eager").eval()
    names = input_names(model, tok)
    enc = tok(["a short one", "a somewhat longer example sentence"], padding=True, return_tensors="pt")
    args = tuple(enc[n] for n in names)
    out_dir.mkdir(parents=True, exist_ok=True)
    axes = {n: {0: "batch", 1: "sequence"} for n in names} | {"logits": {0: "batch"}}
    with torch.no_grad():
        torch.onnx.export(model, args, str(out_dir / "model.onnx"), input_names=names, output_names=["logits"],
                          dynamic_axes=axes, opset_version=opset, dynamo=False)
    model.config.save_pretrained(str(out_dir))
    cfg_path = out_dir / "config.json"
    saved = json.loads(cfg_path.read_text(encoding="utf-8"))
    if "id2label" not in saved:  # transformers omits default LABEL_i names; the predictor needs them
        saved["id2label"] = {str(k): v for k, v in model.config.id2label.items()}
        cfg_path.write_text(json.dumps(saved, indent=2), encoding="utf-8")
    tok.save_pretrained(str(out_dir))
    if (Path(src) / INFERENCE_FILE).is_file():  # predictors of the export tokenize as the source was trained
        shutil.copyfile(Path(src) / INFERENCE_FILE, out_dir / INFERENCE_FILE)
    cfg = model.config
    return {"params": int(sum(p.numel() for p in model.parameters())), "inputs": names,
            "model_type": cfg.model_type, "num_heads": int(getattr(cfg, "num_attention_heads", 0) or 0),
            "hidden_size": int(getattr(cfg, "hidden_size", 0) or 0)}


def optimize(path: Path, meta: dict[str, Any]) -> bool:
    """Fuse attention/LayerNorm/GELU with ORT's transformer optimizer in place; False if not applicable (a
    non-transformer student: ORT's own graph optimizations still run when the session loads it).

    For BERT the optimizer (model_type bert) fuses the embeddings into EmbedLayerNormalization, each self-attention
    block into one Attention op, residual + LayerNorm into SkipLayerNormalization, the erf GELU into Gelu /
    BiasGelu; the counts go into meta["fused_ops"]."""
    if meta["model_type"] not in ("bert", "roberta", "distilbert", "xlm-roberta", "electra"):
        return False
    from onnxruntime.transformers.optimizer import optimize_model

    model_type = "bert" if meta["model_type"] in ("roberta", "xlm-roberta", "electra") else meta["model_type"]
    opt = optimize_model(str(path), model_type=model_type, num_heads=meta["num_heads"], hidden_size=meta["hidden_size"])
    meta["fused_ops"] = {k: int(v) for k, v in opt.get_fused_operator_statistics().items() if v}
    opt.save_model_to_file(str(path))
    return True


class _Calibration:
    """ORT CalibrationDataReader over tokenized texts (truncated as in training), one batch-1 example at a time."""

    def __init__(self, tokenizer: Any, texts: list[str], names: list[str], max_length: int,
                 truncation: str = "right") -> None:
        from llmopt.training.tokenize import encode

        self._it: Iterator[dict[str, np.ndarray]] = (
            {n: np.asarray(enc[n][0], dtype=np.int64)[None, :] for n in names}
            for enc in (encode(tokenizer, [t], max_length, truncation) for t in texts)
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def rewind(self) -> None:  # pragma: no cover - only used by some calibrators
        pass


def quantize(fp32: Path, out: Path, scheme: str, meta: dict[str, Any], tokenizer: Any = None,
             calibration: list[str] | None = None, max_length: int = 128, truncation: str = "right") -> None:
    """Write the `scheme` version of the fp32 ONNX model `fp32` to `out`."""
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static

    extra = {"DefaultTensorType": onnx.TensorProto.FLOAT}  # fused contrib ops defeat shape inference
    if scheme == "fp32":
        shutil.copyfile(fp32, out)
    elif scheme == "dynamic_int8":
        # per output channel: one scale per weight column, not per tensor (on the default recipe's 3-layer student:
        # 98.6% of dev predictions equal to fp32 against 97.2% per tensor, at the same size and speed)
        quantize_dynamic(str(fp32), str(out), weight_type=QuantType.QInt8, per_channel=True, extra_options=extra)
    elif scheme == "static_int8":
        if not calibration:
            raise ModelError("static_int8 needs calibration texts (the data stage's dev split).")
        from onnxruntime.quantization.shape_inference import quant_pre_process

        pre = out.with_name("preprocessed.onnx")
        with contextlib.chdir(out.parent):  # on failure ORT drops sym_shape_infer_temp.onnx into the cwd
            quant_pre_process(str(fp32), str(pre), auto_merge=True)
        quantize_static(str(pre), str(out), _Calibration(tokenizer, calibration, meta["inputs"], max_length, truncation),
                        quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        op_types_to_quantize=["MatMul", "Gemm"], per_channel=True, extra_options=extra)
        pre.unlink()
    elif scheme in ("weight_only_int8", "weight_only_int4"):
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

        q = MatMulNBitsQuantizer(onnx.load(str(fp32)), bits=8 if scheme.endswith("int8") else 4, block_size=32,
                                 is_symmetric=True, accuracy_level=4)
        q.process()
        q.model.save_model_to_file(str(out), use_external_data_format=False)
    else:
        raise ModelError(f"unknown quantization scheme '{scheme}'. Known: {', '.join(SCHEMES)}.")


def write_meta(out_dir: Path, meta: dict[str, Any]) -> None:
    from llmopt.fsutil import atomic_write_json

    atomic_write_json(out_dir / META, meta)


def read_meta(folder: Path) -> dict[str, Any]:
    p = Path(folder) / META
    return json.loads(p.read_text(encoding="utf-8")) if p.is_file() else {}


def op_type_counts(path: Path) -> dict[str, int]:
    """How many nodes of each operator type the graph holds (what ONNX Runtime will run, before its own fusions)."""
    import collections

    import onnx

    m = onnx.load(str(path), load_external_data=False)
    return dict(collections.Counter(n.op_type for n in m.graph.node).most_common())


def profile_ops(folder: Path, texts: list[str], threads: int = 1, runs: int = 50, max_length: int | None = None,
                work: Path | None = None) -> list[dict[str, Any]]:
    """ONNX Runtime's profiler on batch-1 calls of the model in `folder`: total microseconds per operator type
    (kernel time only, summed over `runs` calls after one warm-up), largest first, with the share of the total."""
    import tempfile

    import onnxruntime as ort

    from llmopt.eval.predictors import Encoder
    from llmopt.models import inference_settings, load_tokenizer

    folder = Path(folder)
    max_length, truncation = inference_settings(folder, max_length)
    enc = Encoder(load_tokenizer(folder), max_length, truncation)
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
        opts.enable_profiling, opts.profile_file_prefix = True, str(Path(tmp) / "ort")
        sess = ort.InferenceSession(str(folder / "model.onnx"), opts, providers=["CPUExecutionProvider"])
        names = [i.name for i in sess.get_inputs()]
        feeds = [{n: v for n, v in enc([t]).items() if n in names} for t in texts[: max(1, runs)]]
        sess.run(None, feeds[0])
        for i in range(runs):
            sess.run(None, feeds[i % len(feeds)])
        events = json.loads(Path(sess.end_profiling()).read_text(encoding="utf-8"))
    per_op: dict[str, float] = {}
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            op = e.get("args", {}).get("op_name", "?")
            per_op[op] = per_op.get(op, 0.0) + float(e.get("dur", 0))
    total = sum(per_op.values()) or 1.0
    return [{"op": k, "us_per_call": v / (runs + 1), "share": v / total}
            for k, v in sorted(per_op.items(), key=lambda kv: -kv[1])]


def onnx_params(path: Path) -> int:
    """Elements in the graph's initializers (fallback parameter count when no meta file exists)."""
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    return int(sum(int(np.prod(t.dims)) for t in m.graph.initializer))


def export_variants(src: Path, work: Path, schemes: list[str], *, calibration: list[str] | None = None,
                    max_length: int = 128, truncation: str = "right", fuse: bool = True,
                    allow_pickle: bool = False) -> dict[str, Path | str]:
    """Export `src` once and write one ONNX model folder per scheme under `work`: {scheme: folder, or the error}.

    Static int8 and the weight-only schemes start from the unfused graph: the QDQ pass does not know ORT's fused
    ops, and MatMulNBits replaces only plain MatMul nodes (on the fused graph the Q/K/V weights inside the
    `Attention` op would stay fp32). Dynamic int8 and fp32 start from the fused graph. One failing scheme does
    not stop the rest."""
    from llmopt.models import load_tokenizer

    work = Path(work)
    meta = export_fp32(src, work / "fp32", allow_pickle=allow_pickle)
    shutil.copyfile(work / "fp32" / "model.onnx", work / "unfused.onnx")
    fused = optimize(work / "fp32" / "model.onnx", meta) if fuse else False
    tok = load_tokenizer(src)
    out: dict[str, Path | str] = {}
    for scheme in dict.fromkeys(schemes):
        folder = work / f"scheme-{scheme}"
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(work / "fp32", folder, ignore=shutil.ignore_patterns("model.onnx"))
        base = work / ("unfused.onnx" if scheme == "static_int8" or scheme.startswith("weight_only") else
                       "fp32/model.onnx")
        try:
            quantize(base, folder / "model.onnx", scheme, meta, tok, calibration, max_length, truncation)
        except Exception as e:  # noqa: BLE001 - reported per scheme; `auto` goes on with the others
            out[scheme] = f"{type(e).__name__}: {e}"
            continue
        write_meta(folder, {**meta, "scheme": scheme, "fused": fused, "source": str(src),
                            "op_types": op_type_counts(folder / "model.onnx")})
        out[scheme] = folder
    return out


def build_onnx_model(src: Path, dest: Path, scheme: str, calibration: list[str] | None = None,
                     max_length: int = 128, fuse: bool = True, truncation: str = "right") -> dict[str, Any]:
    """src (safetensors folder) → dest folder with model.onnx in `scheme`, tokenizer, config and meta."""
    import tempfile

    from llmopt.fsutil import atomic_replace_dir

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".onnx-") as tmp:
        got = export_variants(src, Path(tmp), [scheme], calibration=calibration, max_length=max_length,
                              truncation=truncation, fuse=fuse)
        if isinstance(got[scheme], str):
            raise ModelError(f"{src}: ONNX {scheme} export failed: {got[scheme]}")
        meta = read_meta(got[scheme])
        atomic_replace_dir(got[scheme], dest)
    return meta
