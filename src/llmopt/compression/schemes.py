"""The quantization schemes llmopt exports (one list; imports nothing heavy, so recipes validate without onnx)."""

from __future__ import annotations

import typing
from typing import Literal

Scheme = Literal["fp32", "dynamic_int8", "static_int8", "weight_only_int8", "weight_only_int4"]
SCHEMES: tuple[str, ...] = typing.get_args(Scheme)
