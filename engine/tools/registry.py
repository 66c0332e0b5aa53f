"""Each client's tools, from its config: which calendar, which CRM, which notifiers.

Providers are registered by name, per interface, at start-up (the composition
root, ``gateway/app.py``)::

    tools = ToolRegistry()
    tools.register_calendar("local", lambda client: local_calendar)
    tools.register_crm("local", lambda client: ledger)
    tools.register_notifier(SLACK)

    tools.for_client(client)   # Tools(calendar=..., crm=..., notifiers=..., transfer_number=...)

A client's ``booking.provider`` picks its calendar and ``crm.provider`` its CRM;
the ``escalation`` block says which registered notifiers reach its staff.
:meth:`ToolRegistry.for_client` builds a client's :class:`Tools` once and keeps
them until that client's config object is replaced (a reload). A name nobody
registered is a :class:`~engine.errors.ConfigError` naming the file, the key
and the names that are registered; :meth:`ToolRegistry.check_clients` reports
such clients at start-up and takes them out, so the others serve.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from engine.config import ClientConfig, ClientRegistry, ConfigProblem, EscalationConfig
from engine.errors import ConfigError
from engine.knowledge import Knowledge
from engine.llm.model import LanguageModel
from engine.tools.calendar import Calendar
from engine.tools.crm import Crm
from engine.tools.notify import NoticeKind

__all__ = [
    "EMAIL",
    "SLACK",
    "CalendarFactory",
    "CrmFactory",
    "KnowledgeFactory",
    "NotifierRoute",
    "ToolRegistry",
    "Tools",
]

F = TypeVar("F")

CalendarFactory = Callable[[ClientConfig], Calendar]
"""Builds (or hands out a shared) calendar for one client. May raise ConfigError."""
CrmFactory = Callable[[ClientConfig], Crm]
"""Builds (or hands out a shared) CRM for one client. May raise ConfigError."""
KnowledgeFactory = Callable[[ClientConfig], Knowledge | None]
ModelFactory = Callable[[ClientConfig], LanguageModel | None]
"""The client's knowledge view, or None when it has no knowledge folder."""

_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,40}$")


@dataclass(frozen=True, slots=True)
class NotifierRoute:
    """A way to tell a business's staff that a conversation needs a person.

    ``name``: the notifier (``slack``, ``email``). ``config_key``: the key of
    the client's ``escalation`` block holding its target; the route applies to
    a client when that key is set. ``outbox_kind``: the outbox delivery that
    sends it (``notify.slack``). The target itself (a webhook URL is a secret)
    stays in the config and is read when the notice is delivered.
    """

    name: str
    config_key: str
    outbox_kind: NoticeKind

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(
                f"notifier name {self.name!r}: use lowercase letters, digits, '_' or '-'"
            )
        if self.config_key not in EscalationConfig.model_fields:
            raise ValueError(
                f"notifier {self.name!r}: escalation has no key {self.config_key!r}; "
                f"known: {', '.join(EscalationConfig.model_fields)}"
            )


SLACK = NotifierRoute("slack", "to_slack_webhook", "notify.slack")
EMAIL = NotifierRoute("email", "to_email", "notify.email")


@dataclass(frozen=True, slots=True)
class Tools:
    """What agents read during a turn. Writes are effects (``ctx.effects``).

    ``calendar``: the client's calendar (free/busy). ``crm``: its lead store
    (reads). ``notifiers``: the routes that reach its staff when a conversation
    is escalated, in registration order (empty: nobody would be told, so do not
    promise a call back). ``transfer_number``: where a phone call can be
    transferred (E.164, ``escalation.phone_transfer_number``), or None.
    ``knowledge``: the client's knowledge index view (``search(query, k)``,
    ``status()``), or None when it has no knowledge folder or the gateway
    runs without an index.
    """

    calendar: Calendar
    crm: Crm
    notifiers: tuple[NotifierRoute, ...] = ()
    transfer_number: str | None = None
    knowledge: Knowledge | None = None
    llm: LanguageModel | None = None
    """The client's language model (``llm.provider: gemini`` with a key), or
    None: the offline engine answers."""

    @property
    def can_escalate(self) -> bool:
        """True when a person can be told (a notifier) or reached (a transfer)."""
        return bool(self.notifiers) or self.transfer_number is not None


def _config_file(client: ClientConfig) -> str:
    """The file a client's config came from, as the loader names it."""
    if client.folder is not None:
        return str(client.folder / "config.yaml")
    return f"clients/{client.client_id}/config.yaml"


class ToolRegistry:
    """Providers by name, and each client's :class:`Tools` built from them."""

    def __init__(self) -> None:
        self._calendars: dict[str, CalendarFactory] = {}
        self._crms: dict[str, CrmFactory] = {}
        self._notifiers: dict[str, NotifierRoute] = {}
        self._built: dict[str, tuple[ClientConfig, Tools]] = {}
        self._knowledge: KnowledgeFactory | None = None
        self._models: ModelFactory | None = None

    # -- registration -----------------------------------------------------------------

    def register_calendar(self, name: str, factory: CalendarFactory) -> None:
        """Make ``booking.provider: <name>`` available. Raises ValueError when the
        name is malformed or already taken."""
        self._register("calendar", self._calendars, name, factory)

    def register_crm(self, name: str, factory: CrmFactory) -> None:
        """Make ``crm.provider: <name>`` available. Raises ValueError when the name
        is malformed or already taken."""
        self._register("crm", self._crms, name, factory)

    def register_notifier(self, route: NotifierRoute) -> None:
        """Offer ``route`` to every client whose ``escalation.<config_key>`` is set.
        Raises ValueError when its name is already taken."""
        if route.name in self._notifiers:
            raise ValueError(f"a notifier named {route.name!r} is already registered")
        self._notifiers[route.name] = route
        self._built.clear()

    def set_knowledge(self, factory: KnowledgeFactory | None) -> None:
        """Give clients their knowledge view (``Tools.knowledge``); None: no index."""
        self._knowledge = factory
        self._built.clear()

    def set_models(self, factory: ModelFactory | None) -> None:
        """Give clients their language model (``Tools.llm``); None: all offline."""
        self._models = factory
        self._built.clear()

    def _register(self, kind: str, table: dict[str, F], name: str, factory: F) -> None:
        if not _NAME.match(name):
            raise ValueError(
                f"{kind} provider name {name!r}: use lowercase letters, digits, '_' or '-'"
            )
        if name in table:
            raise ValueError(f"a {kind} provider named {name!r} is already registered")
        table[name] = factory
        self._built.clear()

    @property
    def calendars(self) -> tuple[str, ...]:
        """Registered calendar names, sorted."""
        return tuple(sorted(self._calendars))

    @property
    def crms(self) -> tuple[str, ...]:
        """Registered CRM names, sorted."""
        return tuple(sorted(self._crms))

    @property
    def notifiers(self) -> tuple[NotifierRoute, ...]:
        return tuple(self._notifiers.values())

    # -- per client -------------------------------------------------------------------

    def problems(self, client: ClientConfig) -> list[ConfigProblem]:
        """What keeps ``client`` from getting its tools: a provider nobody
        registered (``severity="error"``, file and key named). Empty when fine."""
        file = _config_file(client)
        found: list[ConfigProblem] = []
        for key, kind, name, known in (
            ("booking.provider", "calendar", client.booking.provider, self.calendars),
            ("crm.provider", "CRM", client.crm.provider, self.crms),
        ):
            if name not in known:
                listed = ", ".join(known) or "none"
                found.append(
                    ConfigProblem(
                        file,
                        key,
                        f"{kind} provider {name!r} is not registered; known providers: {listed}",
                    )
                )
        return found

    def validate(self, client: ClientConfig) -> None:
        """Raise :class:`~engine.errors.ConfigError` (file, key, reason) for the first
        of :meth:`problems`."""
        for problem in self.problems(client):
            raise ConfigError(problem.file, problem.key, problem.reason)

    def for_client(self, client: ClientConfig) -> Tools:
        """The client's tools, built on first use and kept while ``client`` is the
        config object the registry last saw for that client id.

        Raises ConfigError when the client names a provider nobody registered
        (or a factory refuses the client's settings).
        """
        built = self._built.get(client.client_id)
        if built is not None and built[0] is client:
            return built[1]
        self.validate(client)
        escalation = client.escalation
        tools = Tools(
            calendar=self._calendars[client.booking.provider](client),
            crm=self._crms[client.crm.provider](client),
            notifiers=tuple(
                route for route in self._notifiers.values() if getattr(escalation, route.config_key)
            ),
            transfer_number=escalation.phone_transfer_number or None,
            knowledge=self._knowledge(client) if self._knowledge is not None else None,
            llm=self._models(client) if self._models is not None else None,
        )
        self._built[client.client_id] = (client, tools)
        return tools

    def check_clients(self, clients: ClientRegistry) -> list[ConfigProblem]:
        """Check every loaded client against the registered providers. A client with
        a problem is taken out of ``clients`` (its problems are added to
        ``clients.problems``), so it is skipped and the others serve. Returns the
        problems found."""
        found: list[ConfigProblem] = []
        for client_id, client in list(clients.clients.items()):
            problems = self.problems(client)
            if problems:
                del clients.clients[client_id]
                self._built.pop(client_id, None)
                found += problems
        clients.problems.extend(found)
        return found
