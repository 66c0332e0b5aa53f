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
    models_dir_setting: Path | None = Field(None, validation_alias="GATEWAY_MODELS_DIR")
    """Where ``gateway models install`` puts speech models; see :attr:`models_dir`."""
    admin_token: str | None = Field(None, validation_alias="GATEWAY_ADMIN_TOKEN")
    public_url: str | None = Field(None, validation_alias="GATEWAY_PUBLIC_URL")
    """Base URL Twilio/Meta call (``https://gw.example.com``); used for webhook
    signature checks and the TwiML stream URL, since proxies rewrite scheme/host."""
    log_level: str = Field("INFO", validation_alias="GATEWAY_LOG_LEVEL")

    database_url: str | None = Field(None, validation_alias="DATABASE_URL")
    """PostgreSQL (``postgresql://user:pass@host/db``) shared by replicas; unset:
    the embedded SQLite file ``<GATEWAY_DATA_DIR>/gateway.sqlite``."""
    db_pool_size: int = Field(10, ge=1, validation_alias="GATEWAY_DB_POOL_SIZE")
    """PostgreSQL connections a replica uses for turns (plus at most 4 for the rest)."""
    db_auto_upgrade: bool = Field(True, validation_alias="GATEWAY_DB_AUTO_UPGRADE")
    """Apply pending schema migrations at start-up (under a lock replicas share)."""
    smtp_url: str | None = Field(None, validation_alias="GATEWAY_SMTP_URL")
    """SMTP server for escalation email: ``smtp://user:pass@host:587``, ``smtps://...``."""
    smtp_from: str | None = Field(None, validation_alias="GATEWAY_SMTP_FROM")
    redis_url: str | None = Field(None, validation_alias="REDIS_URL")
    qdrant_url: str | None = Field(None, validation_alias="QDRANT_URL")
    """A Qdrant server for the knowledge index (``http://host:6333``); unset: Qdrant
    local mode in ``<GATEWAY_DATA_DIR>/qdrant`` (one process at a time: the
    gateway holds it while serving; several replicas need a server)."""
    qdrant_api_key: str | None = Field(None, validation_alias="QDRANT_API_KEY")
    embedder: str = Field("auto", validation_alias="GATEWAY_EMBEDDER")
    """Dense embedder for knowledge search: ``auto`` (the bundled all-MiniLM-L6-v2
    when it loads, else sparse only), ``minilm``, ``none`` (sparse BM25 only), or
    a local sentence-transformers model folder."""
    knowledge_ingest_on_start: bool = Field(
        True, validation_alias="GATEWAY_KNOWLEDGE_INGEST_ON_START"
    )
    """Ingest stale client knowledge folders in the background at start-up."""
    gemini_api_key: str | None = Field(None, validation_alias="GEMINI_API_KEY")

    twilio_base_url: str | None = Field(None, validation_alias="TWILIO_BASE_URL")
    meta_graph_base_url: str = Field(
        "https://graph.facebook.com", validation_alias="META_GRAPH_BASE_URL"
    )
    gemini_base_url: str | None = Field(None, validation_alias="GEMINI_BASE_URL")
    hubspot_base_url: str = Field("https://api.hubapi.com", validation_alias="HUBSPOT_BASE_URL")
    pipedrive_base_url: str | None = Field(None, validation_alias="PIPEDRIVE_BASE_URL")
    """Pipedrive's API root incl. ``/v1`` (default: ``https://api.pipedrive.com/v1``,
    or ``https://<crm.pipedrive.company_domain>.pipedrive.com/api/v1``)."""
    airtable_base_url: str = Field("https://api.airtable.com", validation_alias="AIRTABLE_BASE_URL")

    google_calendar_base_url: str = Field(
        "https://www.googleapis.com", validation_alias="GOOGLE_CALENDAR_BASE_URL"
    )
    google_oauth_token_url: str = Field(
        "https://oauth2.googleapis.com/token", validation_alias="GOOGLE_OAUTH_TOKEN_URL"
    )
    calendly_base_url: str = Field("https://api.calendly.com", validation_alias="CALENDLY_BASE_URL")
    slack_base_url: str | None = Field(None, validation_alias="SLACK_BASE_URL")
    """Rewrites Slack webhook URLs' scheme and host (tests point it at a stub)."""

    messaging_lease_s: float = Field(60.0, gt=0, validation_alias="GATEWAY_MESSAGING_LEASE_S")
    """How long a replica holds the inbound WhatsApp/SMS messages it is answering;
    a replica that died mid-turn gives them back after this many seconds."""
    messaging_poll_s: float = Field(0.5, gt=0, validation_alias="GATEWAY_MESSAGING_POLL_S")
    """How often a replica looks for messages other replicas recorded."""

    outbox_poll_s: float = Field(1.0, gt=0, validation_alias="GATEWAY_OUTBOX_POLL_S")
    outbox_claim_s: float = Field(60.0, gt=0, validation_alias="GATEWAY_OUTBOX_CLAIM_S")
    """How long a replica holds a row it is delivering; a replica that died
    mid-delivery gives it back after this many seconds."""
    outbox_max_attempts: int = Field(12, ge=1, validation_alias="GATEWAY_OUTBOX_MAX_ATTEMPTS")
    outbox_max_age_s: float = Field(
        2 * 24 * 3600, gt=0, validation_alias="GATEWAY_OUTBOX_MAX_AGE_S"
    )
    outbox_base_backoff_s: float = Field(
        1.0, gt=0, validation_alias="GATEWAY_OUTBOX_BASE_BACKOFF_S"
    )
    outbox_max_backoff_s: float = Field(
        900.0, gt=0, validation_alias="GATEWAY_OUTBOX_MAX_BACKOFF_S"
    )
    lock_lease_s: float = Field(5.0, gt=0, validation_alias="GATEWAY_LOCK_LEASE_S")
    """Redis lock lease (seconds), renewed while a turn runs; a dead replica's
    locks free themselves within it."""

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
    web_new_sessions_per_min: float = Field(
        30.0, gt=0, validation_alias="GATEWAY_WEB_NEW_SESSIONS_PER_MIN"
    )
    """New web chat sessions one source address may open per minute (burst: twice that)."""

    phone_audio_burst_s: float = Field(10.0, gt=0, validation_alias="GATEWAY_PHONE_AUDIO_BURST_S")
    """Caller audio a phone call may send ahead of real time, in seconds; the excess
    is dropped (Twilio streams in real time; a flood costs no more than that)."""
    speech_warm_up: bool = Field(True, validation_alias="GATEWAY_SPEECH_WARM_UP")
    """Load the phone clients' speech models (and speak their fixed lines into the
    synthesiser's cache) in the background at start-up, so the first caller does
    not wait seconds for a model to load. Off: models load on a client's first call."""
    phone_max_calls: int = Field(16, ge=0, validation_alias="GATEWAY_PHONE_MAX_CALLS")
    """Concurrent phone calls one replica (one gateway process) carries, 0 for no limit.
    16: the most two cores answered within 800 ms (p50) with Whisper and Piper
    (``bench.phone_calls --speech real``).
    Beyond it the voice webhook answers with a polite "all our lines are busy" (or a
    transfer to ``escalation.phone_transfer_number``); /readyz reports the headroom."""

    @property
    def models_dir(self) -> Path:
        """Speech models folder: ``GATEWAY_MODELS_DIR``, default ``<GATEWAY_DATA_DIR>/models``."""
        return self.models_dir_setting or self.data_dir / "models"
