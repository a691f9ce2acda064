"""Int8 weights for the LLM's linear layers, for faster answers on a CPU.

A decoding step of the default model reads every weight of its LLM (17.6 MB in float32) for
one token, and on a CPU whose memory is slow next to its arithmetic, that read is most of the
step. PyTorch's dynamic quantization stores each linear layer's weight in int8, one scale per
output row, and quantizes its input on the fly (fbgemm's int8 kernels, on x86 with AVX2): a
quarter of the bytes per step. Only the language model and its vocabulary head change; the
vision tower, the projector, SAM and the probes keep float32. Answers are close to, but not the
same as, float32's: measure a model with and without (`pixelreason eval ... --int8`).
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from pixelreason.errors import InputError

__all__ = ["quantize_language_model"]


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
