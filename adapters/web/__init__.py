"""Web chat channel: websocket endpoint, event replay, embeddable widget."""

from adapters.web.endpoint import WebLimits, web_router

__all__ = ["WebLimits", "web_router"]
