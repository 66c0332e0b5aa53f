"""The gateway: composition root wiring clients, channels, purposes and providers."""

from gateway.app import create_app
from gateway.settings import Settings

__all__ = ["Settings", "create_app"]
