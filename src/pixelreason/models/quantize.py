"""Smaller weights for the LLM's decoding, for faster answers on a CPU.

A decoding step of the default model reads every weight of its LLM (17.6 MB in float32) for
one token, and on a CPU whose memory is slow next to its arithmetic, that read is most of the
step. PyTorch's dynamic quantization stores each linear layer's weight in int8, one scale per
output row, and quantizes its input on the fly (fbgemm's int8 kernels, on x86 with AVX2): a
quarter of the bytes per step. Only the language model and its vocabulary head change; the
vision tower, the projector, SAM and the probes keep float32. Answers are close to, but not the
same as, float32's: measure a model with and without (`pixelreason eval ... --int8`).

Half steps (`half_steps`, on by default on a CPU) are the gentler form: only calls on a few
rows, the decoding steps, multiply by a float16 copy of each linear layer's weight (half the
bytes); prompts, teacher-forced passes and the vocabulary head, whose scores the checks weigh
by margins of a few nats, stay float32. On the ReasonWorld test, val and zero-shot splits the
bundled default's answers have the same words and gIoU with and without them; its masks'
scores move in the fourth decimal.
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import nn

from pixelreason.errors import InputError

__all__ = [
    "HalfStepLinear",
    "STEP_ROWS",
    "half_steps",
    "half_steps_pay",
    "quantize_language_model",
]

#: A linear layer call on at most this many rows (tokens x batch) counts as a decoding step.
STEP_ROWS = 4


def quantize_language_model(model: nn.Module) -> nn.Module:
    """Swap the LLM's `nn.Linear` layers of a `PixelReasonModel` for int8 ones, in place.

    For inference only (the int8 layers have no gradients and are not saved); the model must
    be on the CPU. Returns the model.
    """
    if any(p.device.type != "cpu" for p in model.parameters()):
        raise InputError("int8 weights run on the CPU only: load the model with device cpu")
    try:
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic
    except ImportError as error:  # a torch without the ao quantization package
        raise InputError(f"int8 weights need torch.ao.quantization: {error}") from None
    if set(torch.backends.quantized.supported_engines) <= {"none"}:
        raise InputError("this torch build has no quantized engine for int8 weights")
    language = model.backbone.model
    spec = {nn.Linear: per_channel_dynamic_qconfig}
    with warnings.catch_warnings():
        # torch 2.13 marks quantized tensors deprecated (in favour of torchao); they work.
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        quantize_dynamic(language.model.language_model.eval(), spec, inplace=True)
        adapted = getattr(model, "knowledge_language_model", None)  # the knowledge adapter's
        if adapted is not None:
            quantize_dynamic(adapted.eval(), spec, inplace=True)
        language.lm_head = quantize_dynamic(nn.Sequential(language.lm_head.eval()), spec)[0]
    return model


class HalfStepLinear(nn.Linear):
    """An `nn.Linear` that multiplies few rows by a float16 copy of its weight.

    A decoding step multiplies one row per answer by every weight of the LLM; on a CPU that is
    mostly a read of the weights from memory, and half the bytes are read in about half the
    time. Calls on more than `STEP_ROWS` rows (prompts, teacher-forced passes), with
    gradients, off the CPU, or whose float16 product overflows (its sum is not finite) use the
    float32 weight as before. The copy is made on first use and again whenever the weight
    changes (another tensor, or its version counter moves after an in-place update); it is
    not a registered tensor, so the state dict, `to` and saving see a plain `nn.Linear`. Only
    the product's inputs are rounded to float16 (10-bit mantissa); its result is float32.
    """

    _half: torch.Tensor | None = None
    _half_of: tuple[int, int] = (0, -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight
        if (
            x.dtype == torch.float32
            and x.device.type == "cpu"
            and x.numel() <= STEP_ROWS * x.shape[-1]
            and not (torch.is_grad_enabled() and (weight.requires_grad or x.requires_grad))
        ):
            source = (id(weight), weight._version)
            if self._half is None or self._half_of != source:
                self._half = weight.detach().to(torch.float16)
                self._half_of = source
            out = nn.functional.linear(x.to(torch.float16), self._half).float()
            if math.isfinite(out.sum().item()):
                return out if self.bias is None else out + self.bias
        return nn.functional.linear(x, weight, self.bias)


def half_steps_pay() -> bool:
    """Whether this CPU has the vector instructions (AVX2 or better on x86, any on ARM) with
    which PyTorch's float16 products are fast: without them (`get_cpu_capability()` is
    "DEFAULT") one product at one row took five times as long as in float32."""
    return torch.backends.cpu.get_cpu_capability() != "DEFAULT"


def half_steps(model: nn.Module) -> int:
    """Make the LLM's `nn.Linear` layers of a `PixelReasonModel` (those of its language model
    and of the knowledge adapter's merged copy, not the vocabulary head) `HalfStepLinear`s, in
    place; returns how many. Their weights, state dict and results on many rows do not change.

    The vocabulary head stays float32: a decoding step's next token is its largest score, and
    where two are nearly tied (an answer's opening words, "It is the" or "The", are equally
    common in training) the head's rounding alone would choose between them."""
    language = model.backbone.model
    parts = [language.model.language_model]
    adapted = getattr(model, "knowledge_language_model", None)
    if adapted is not None:
        parts.append(adapted)
    swapped = 0
    for part in parts:
        for module in part.modules():
            if type(module) is nn.Linear:
                module.__class__ = HalfStepLinear
                swapped += 1
    return swapped
