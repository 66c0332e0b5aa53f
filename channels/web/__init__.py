"""Web chat channel: websocket endpoint, event replay, embeddable widget.

``web_router(deps)`` serves ``WS /web/chat/{client_id}`` and ``GET /widget.js``;
``WebLimits`` holds the per-connection limits the gateway reads from settings.
The wire format is in :mod:`channels.web.codec`.
"""

from channels.web.endpoint import WebDeps, web_router
from channels.web.limits import WebLimits

__all__ = ["WebDeps", "WebLimits", "web_router"]
