"""pixelreason: reasoning segmentation with multimodal LLMs.

Ask an image an implicit question, get a text answer and one mask per object it refers to.
`Segmenter` is the entry point; it is imported lazily so `import pixelreason` stays light.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["Result", "Segmenter", "__version__"]


def __getattr__(name: str) -> Any:
    if name in ("Segmenter", "Result"):
        from pixelreason import api

        return getattr(api, name)
    raise AttributeError(f"module 'pixelreason' has no attribute {name!r}")
