"""Settings, read once from the environment (and an optional ``.env``) into a typed object.

Names follow DESIGN.md's table: ``GATEWAY_ADMIN_TOKEN``, ``GATEWAY_PUBLIC_URL``,
``GATEWAY_DATA_DIR``, ``REDIS_URL``, ``QDRANT_URL``, ``GEMINI_API_KEY`` and one
``*_BASE_URL`` per vendor API so tests can point the gateway at local stubs.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)

    clients_dir: Path = Field(Path("clients"), validation_alias="GATEWAY_CLIENTS_DIR")
    data_dir: Path = Field(Path("data"), validation_alias="GATEWAY_DATA_DIR")
    admin_token: str | None = Field(None, validation_alias="GATEWAY_ADMIN_TOKEN")
    public_url: str | None = Field(None, validation_alias="GATEWAY_PUBLIC_URL")
    """Base URL Twilio/Meta call (``https://gw.example.com``); used for webhook
    signature checks and the TwiML stream URL, since proxies rewrite scheme/host."""
    log_level: str = Field("INFO", validation_alias="GATEWAY_LOG_LEVEL")

    redis_url: str | None = Field(None, validation_alias="REDIS_URL")
    qdrant_url: str | None = Field(None, validation_alias="QDRANT_URL")
    gemini_api_key: str | None = Field(None, validation_alias="GEMINI_API_KEY")

    twilio_base_url: str | None = Field(None, validation_alias="TWILIO_BASE_URL")
    meta_graph_base_url: str = Field(
        "https://graph.facebook.com", validation_alias="META_GRAPH_BASE_URL"
    )
    gemini_base_url: str | None = Field(None, validation_alias="GEMINI_BASE_URL")
    hubspot_base_url: str = Field("https://api.hubapi.com", validation_alias="HUBSPOT_BASE_URL")

    session_ttl_s: float = Field(24 * 3600, gt=0, validation_alias="GATEWAY_SESSION_TTL_S")
    lock_timeout_s: float = Field(10.0, gt=0, validation_alias="GATEWAY_LOCK_TIMEOUT_S")

    web_max_frame_bytes: int = Field(8192, gt=0, validation_alias="GATEWAY_WEB_MAX_FRAME_BYTES")
    """Largest accepted web chat frame, in bytes; larger frames get an ``error`` event."""
    web_max_text_chars: int = Field(2000, gt=0, validation_alias="GATEWAY_WEB_MAX_TEXT_CHARS")
    web_rate_per_s: float = Field(
        2.0, gt=0, validation_alias=AliasChoices("GATEWAY_WEB_RATE_PER_S")
    )
    """Sustained messages per second per web connection (token bucket)."""
    web_rate_burst: int = Field(10, gt=0, validation_alias="GATEWAY_WEB_RATE_BURST")
