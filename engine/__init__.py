"""The conversation engine: ``Engine.handle_turn`` and everything it runs on.

Public names are re-exported here; the modules behind them are the
implementation. See DESIGN.md, "The engine contract".
"""

from engine.agents import Agent, AgentReply, Handback, TurnContext
from engine.config import ClientConfig, ClientRegistry, ConfigProblem, load_client, load_clients
from engine.core import Engine
from engine.errors import (
    ConfigError,
    GatewayError,
    SessionBusyError,
    SlotTakenError,
    StoreError,
    ToolError,
    UnknownClientError,
    UnknownPurposeError,
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
from engine.session import (
    ConversationSession,
    MemorySessionStore,
    RedisSessionStore,
    SessionKey,
    SessionStore,
    Turn,
)

__all__ = [
    "Action",
    "Agent",
    "AgentReply",
    "ClientConfig",
    "ClientRegistry",
    "ConfigError",
    "ConfigProblem",
    "ConversationResponse",
    "ConversationSession",
    "Engine",
    "GatewayError",
    "Handback",
    "MemorySessionStore",
    "NormalizedMessage",
    "QuickReply",
    "RedisSessionStore",
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
    "load_client",
    "load_clients",
]
