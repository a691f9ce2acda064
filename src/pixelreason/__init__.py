"""pixelreason: reasoning segmentation with multimodal LLMs."""

__version__ = "0.1.0"
