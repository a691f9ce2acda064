"""HTTP server and web page over `pixelreason.api` (`pixelreason serve`)."""

from pixelreason.server.app import create_app
from pixelreason.server.service import SegmentService, ServerConfig

__all__ = ["SegmentService", "ServerConfig", "create_app"]
