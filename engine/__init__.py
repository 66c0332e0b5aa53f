"""The conversation engine: ``Engine.handle_turn`` and everything it runs on.

Public names are re-exported here; the modules behind them are the
implementation. See DESIGN.md, "The engine contract".
"""

from engine.agents import Agent, AgentReply, Handback, HandbackStatus, HandoffRequest, TurnContext
from engine.config import ClientConfig, ClientRegistry, ConfigProblem, load_client, load_clients
from engine.coordinator import Agents, Coordinator
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
    AgentEvent,
    ChannelContext,
    ConversationResponse,
    Discard,
    Handoff,
    NormalizedMessage,
    QuickReply,
    ResponseMetadata,
    TextDelta,
    ToolCall,
    ToolResult,
    TurnEvent,
)
from engine.session import ConversationSession, LoadedSession, SessionKey, SessionStore, Turn

__all__ = [
    "Action",
    "Agent",
    "AgentEvent",
    "AgentReply",
    "Agents",
    "ChannelContext",
    "ClientConfig",
    "ClientRegistry",
    "CommitConflict",
    "ConfigError",
    "ConfigProblem",
    "ConversationResponse",
    "ConversationSession",
    "Coordinator",
    "Discard",
    "DuplicateMessageError",
    "Engine",
    "GatewayError",
    "Handback",
    "HandbackStatus",
    "Handoff",
    "HandoffRequest",
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
    "ToolCall",
    "ToolError",
    "ToolResult",
    "Turn",
    "TurnContext",
    "TurnEvent",
    "UnknownClientError",
    "UnknownPurposeError",
    "UnknownSessionError",
    "load_client",
    "load_clients",
]
