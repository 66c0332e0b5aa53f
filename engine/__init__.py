"""The conversation engine: ``Engine.handle_turn`` and everything it runs on.

Public names are re-exported here; the modules behind them are the
implementation. See DESIGN.md, "The engine contract".
"""

from engine.agents import Agent, AgentReply, Handback, TurnContext
from engine.config import ClientConfig, ClientRegistry, ConfigProblem, load_client, load_clients
from engine.core import Engine
from engine.errors import (
    CommitConflict,
    ConfigError,
    DuplicateMessageError,
    GatewayError,
    SessionBusyError,
    SlotTakenError,
    StoreError,
    ToolError,
    UnknownClientError,
    UnknownPurposeError,
    UnknownSessionError,
)
from engine.messages import (
    Action,
    ConversationResponse,
    NormalizedMessage,
    QuickReply,
    ResponseMetadata,
    TextDelta,
    TurnEvent,
)
from engine.session import ConversationSession, LoadedSession, SessionKey, SessionStore, Turn

__all__ = [
    "Action",
    "Agent",
    "AgentReply",
    "ClientConfig",
    "ClientRegistry",
    "CommitConflict",
    "ConfigError",
    "ConfigProblem",
    "ConversationResponse",
    "ConversationSession",
    "DuplicateMessageError",
    "Engine",
    "GatewayError",
    "Handback",
    "LoadedSession",
    "NormalizedMessage",
    "QuickReply",
    "ResponseMetadata",
    "SessionBusyError",
    "SessionKey",
    "SessionStore",
    "SlotTakenError",
    "StoreError",
    "TextDelta",
    "ToolError",
    "Turn",
    "TurnContext",
    "TurnEvent",
    "UnknownClientError",
    "UnknownPurposeError",
    "UnknownSessionError",
    "load_client",
    "load_clients",
]
