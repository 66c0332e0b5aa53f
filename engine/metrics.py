"""Prometheus metrics shared by the engine, providers and channels (``GET /metrics``).

Labels never carry personal data: only client id, channel, purpose, outcome.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

__all__ = [
    "ACTIVE_CONNECTIONS",
    "OUTBOX_ITEMS",
    "OUTBOX_OLDEST_PENDING_SECONDS",
    "TURNS",
    "TURN_ERRORS",
    "TURN_SECONDS",
]

TURNS = Counter(
    "gateway_turns_total", "Conversation turns handled", ["client_id", "channel", "purpose"]
)
TURN_SECONDS = Histogram(
    "gateway_turn_seconds",
    "Engine time per turn, message in -> final response, in seconds",
    ["client_id", "channel", "purpose"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
TURN_ERRORS = Counter(
    "gateway_turn_errors_total",
    "Turns answered by the fallback path",
    ["client_id", "channel", "kind"],
)
OUTCOMES = Counter(
    "gateway_outcomes_total",
    "Conversation outcomes (booked, escalated...)",
    ["client_id", "channel", "outcome"],
)
ACTIVE_CONNECTIONS = Gauge("gateway_active_connections", "Open realtime connections", ["channel"])

# Read from the shared outbox table by every replica's worker (about every 5 s):
# each replica reports the same figures, so aggregate with max, not sum.
OUTBOX_ITEMS = Gauge(
    "gateway_outbox_items",
    "Outbox rows by state (pending, delivering, delivered, dead), all clients",
    ["state"],
)
OUTBOX_OLDEST_PENDING_SECONDS = Gauge(
    "gateway_outbox_oldest_pending_seconds",
    "Age in seconds of the oldest outbox row not yet delivered (pending or delivering); "
    "0 when there is none",
)
