"""The generated reference pages of the documentation site (``docs/reference/``).

``python -m gateway.docsgen`` writes them; ``python -m gateway.docsgen --check``
writes nothing and exits 1, naming each page that differs from what the code
says now. The pages come from the code itself, so they cannot drift from it:

``docs/reference/client-config.md``
    Every key of ``clients/<id>/config.yaml`` (the pydantic models of
    :mod:`engine.config`, walked from :class:`~engine.config.ClientConfig`):
    dotted path, type and constraints, default, description (the field's
    docstring, else its ``description``), and the reference client folder as
    the example.
``docs/reference/settings.md``
    Every environment variable of :class:`gateway.settings.Settings`.
``docs/reference/http-api.md``
    Every HTTP route of the app's OpenAPI schema (``create_app(...).openapi()``;
    no server, no network), plus the WebSocket routes and the routes left out
    of the schema.
``docs/reference/cli.md``
    Every ``gateway`` command with its usage, arguments and options.

The output is deterministic: no timestamps, no environment (settings are
built with their defaults, not read from the environment), stable order.
A field without a docstring or description gets its text from the notes
below (:data:`CONFIG_NOTES`, :data:`SETTING_NOTES`); a note for a key that no
longer exists is an error, so the notes cannot go stale either.
"""

from __future__ import annotations

import argparse
import ast
import enum
import inspect
import json
import logging
import re
import sys
import textwrap
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import time
from itertools import pairwise
from pathlib import Path
from types import NoneType, UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import AliasChoices, BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

__all__ = [
    "CONFIG_NOTES",
    "PAGES",
    "ROOT",
    "SETTING_NOTES",
    "cli_commands",
    "main",
    "render_pages",
    "stale_pages",
]

ROOT = Path(__file__).resolve().parents[1]
"""The checkout: pages are written under ``ROOT/docs/reference``."""

REGENERATE = ".venv/bin/python -m gateway.docsgen"

EXAMPLE_CLIENT = Path("clients/spa-del-sol/config.yaml")

CONFIG_NOTES: dict[str, str] = {
    "client_id": "The client's id: the folder's name (lowercase letters, digits, `-`, `_`; at "
    "most 63 characters). Optional in the file; when given it must equal the folder name.",
    "name": "The business's name, as the assistant says it.",
    "locale": "Language and region (`en-US`): the region parses phone numbers written "
    "without a country code.",
    "business_hours": "Opening hours per day, local time in `timezone`: "
    '`mon: ["09:00", "19:00"]` (closing time exclusive) or `sun: closed`; a day left out '
    "is closed.",
    "services": "The services the business books, each a mapping (see `services[]`).",
    "services[].name": "The service's canonical name (unique in the client, case-insensitive); "
    "leads and bookings carry it.",
    "services[].duration_minutes": "How long a booking of this service takes.",
    "services[].price": "Price in the client's currency, said in answers and summaries.",
    "services[].aliases": "Other words customers use for it (`massage`, `facial`); "
    "matched fuzzily.",
    "services[].description": "One line about the service, used in answers about it.",
    "channels.phone": "Calls to the business's Twilio number.",
    "channels.web": "The web chat widget.",
    "channels.phone.enabled": "Answer calls to this client.",
    "channels.phone.purpose": "The agent that answers calls: `auto` (the router decides) or a "
    "purpose name (`lead_capture`, `support`).",
    "channels.phone.greeting": "First line of every call; unset: a greeting built from `name`.",
    "channels.phone.twilio": "The Twilio account of the phone number: the voice webhook's "
    "signature, call transfers and hang-ups.",
    "channels.phone.filler_after_ms": "A reply slower than this to start gets a `filler` "
    "line first.",
    "channels.phone.turn_taking": "When a caller's turn starts and ends, and barge-in.",
    "channels.phone.twilio.account_sid": "Twilio account SID (`AC...`).",
    "channels.phone.twilio.auth_token": "Twilio auth token: checks `X-Twilio-Signature` and "
    "signs the one-time stream tokens; usually `${ENV_VAR}`.",
    "channels.phone.twilio.from": "The number (or `whatsapp:+1...` sender) messages are sent from.",
    "channels.whatsapp.enabled": "Answer WhatsApp messages for this client.",
    "channels.whatsapp.purpose": "The agent that answers: `auto` or a purpose name.",
    "channels.whatsapp.twilio": "The Twilio WhatsApp sender (optional).",
    "channels.whatsapp.twilio.account_sid": "Twilio account SID (`AC...`).",
    "channels.whatsapp.twilio.auth_token": "Twilio auth token: checks `X-Twilio-Signature` of "
    "the webhook and sends replies.",
    "channels.whatsapp.twilio.from": "The sender, `whatsapp:+14155550123`.",
    "channels.whatsapp.meta": "The Meta WhatsApp Cloud API number (optional).",
    "channels.whatsapp.meta.app_secret": "The Meta app's secret: checks "
    "`X-Hub-Signature-256` of the webhook.",
    "channels.whatsapp.meta.verify_token": "The token Meta sends when the webhook is "
    "verified (`GET /meta/whatsapp/{client_id}`).",
    "channels.whatsapp.meta.access_token": "The access token replies and media downloads use.",
    "channels.whatsapp.meta.phone_number_id": "The WhatsApp business number's id at Meta.",
    "channels.whatsapp.burst_window_ms": "Messages of one conversation sent within this "
    "window are answered as one turn.",
    "channels.whatsapp.template": "The approved template for sends outside the 24-hour "
    "window; none: such a send is dead-lettered with that reason.",
    "channels.whatsapp.template.content_sid": "Twilio's Content SID of the template (`HX...`).",
    "channels.whatsapp.template.name": "Meta's template name.",
    "channels.whatsapp.template.language": "Meta's template language.",
    "channels.web.enabled": "Serve the web chat for this client (else the socket is closed "
    "with 4403).",
    "channels.web.purpose": "The agent that answers: `auto` or a purpose name.",
    "channels.web.greeting": "The widget's first line; unset: a greeting built from `name`.",
    "channels.sms.enabled": "Answer SMS for this client.",
    "channels.sms.purpose": "The agent that answers: `auto` or a purpose name.",
    "channels.sms.twilio": "The Twilio account for SMS; unset (or without `account_sid`): "
    "`channels.phone.twilio`.",
    "channels.sms.twilio.account_sid": "Twilio account SID (`AC...`).",
    "channels.sms.twilio.auth_token": "Twilio auth token.",
    "channels.sms.twilio.from": "The number replies are sent from; default the number the "
    "customer texted.",
    "channels.sms.burst_window_ms": "Messages of one conversation sent within this window are "
    "answered as one turn.",
    "booking.slot_minutes": "Granularity of the start times offered.",
    "booking.rules": "What a booking asks for and when it may start.",
    "booking.rules.lead_fields": "The details asked for, in order (`name`, `phone`, `email`, "
    "`service`, `time`, `notes`).",
    "booking.rules.min_notice_hours": "Earliest start, in hours from now.",
    "booking.rules.max_days_ahead": "Latest start, in days from today.",
    "booking.approval": "Bookings a person at the business confirms first.",
    "booking.approval.services": "Service names that always need approval.",
    "booking.approval.within_hours": "A start sooner than this needs approval (0: off).",
    "booking.approval.timeout_minutes": "How long staff have to decide (never past the "
    "booking's start).",
    "booking.approval.fallback": "What happens without a decision: `decline` or "
    "`take_message` (a `callback_requested` lead).",
    "crm.hubspot": "Required when `crm.provider: hubspot`.",
    "crm.pipedrive": "Required when `crm.provider: pipedrive`.",
    "crm.airtable": "Required when `crm.provider: airtable`.",
    "crm.webhook": "Required when `crm.provider: webhook`.",
    "channels": "The channels the client is reached on.",
    "booking": "The calendar and the booking rules.",
    "crm": "Where leads go.",
    "support": "Answers from the client's own documents.",
    "support.knowledge_dir": "The knowledge folder, relative to the client folder "
    "(Markdown, text, HTML, PDF).",
    "support.min_confidence": "Below this confidence support does not guess: it says so and "
    "offers a person.",
    "escalation": "Where a conversation goes when a person is needed.",
    "escalation.to_slack_webhook": "Slack incoming-webhook URL for escalation and approval "
    "notices; usually `${ENV_VAR}`.",
    "escalation.to_email": "Address for escalation and approval notices (needs "
    "`GATEWAY_SMTP_URL`).",
    "escalation.phone_transfer_number": "E.164 number a call is transferred to when the "
    "caller asks for a person (and when every line is busy).",
    "llm": "Which model answers.",
    "llm.provider": "`offline` (the rule engine) or `gemini` (needs `GEMINI_API_KEY`).",
    "llm.model": "The Gemini model.",
    "llm.first_token_s": "Seconds to a model call's first streamed chunk, per channel "
    "(`default` for the others).",
    "llm.total_s": "Seconds the model may use in one turn; past it the offline engine "
    "answers that turn.",
    "llm.prices": "Prices per million tokens for the cost estimate; unset: the model's list price.",
    "llm.prices.input_per_million": "USD per million input tokens.",
    "llm.prices.output_per_million": "USD per million output tokens.",
    "voice": "Speech recognition and synthesis on calls.",
    "voice.stt": "Speech recognition.",
    "voice.stt.provider": "`auto` (faster-whisper when installed, else PocketSphinx), "
    "`faster-whisper` or `pocketsphinx`.",
    "voice.stt.model": "Whisper model: `tiny.en`, `base` or a model folder.",
    "voice.stt.voice": "Not used for recognition.",
    "voice.stt.phrases": "Extra words the recogniser is biased towards, beside the service "
    "names and aliases.",
    "voice.tts": "Speech synthesis.",
    "voice.tts.provider": "`auto` (Piper when a voice is installed, else espeak-ng), "
    "`piper` or `espeak`.",
    "voice.tts.model": "Not used for synthesis.",
    "voice.tts.voice": "Piper voice: `en_US-joe-medium` or a `.onnx` path.",
    "voice.tts.phrases": "Not used for synthesis.",
    "memory": "Returning contacts and how long personal data is kept.",
    "memory.enabled": "Remember contacts; off: nothing is remembered and what was is deleted.",
    "memory.retention_days": "Contacts not seen for this long are deleted, with transcripts, "
    "sessions and call traces older than that.",
}
"""Descriptions of client config keys whose field has no docstring or description
(keyed by dotted path). The field's own text wins when it has one."""

SETTING_NOTES: dict[str, str] = {
    "GATEWAY_CLIENTS_DIR": "The folder of client folders (`gateway serve --clients-dir` sets it).",
    "GATEWAY_DATA_DIR": "Where the embedded SQLite database (`gateway.sqlite`), Qdrant's "
    "local index and the speech models live.",
    "GATEWAY_ADMIN_TOKEN": "Bearer token of `/admin/api/*`; unset: the admin API answers 404.",
    "GATEWAY_LOG_LEVEL": "Log level (`DEBUG`, `INFO`, `WARNING`...).",
    "GATEWAY_SMTP_FROM": "Sender of escalation email; default `gateway@<SMTP host>`.",
    "REDIS_URL": "Redis for the session locks, the inbox locks, phone stream tokens and the "
    "staff-reply bus shared by replicas; unset: in-process (one replica).",
    "QDRANT_API_KEY": "API key of the Qdrant server.",
    "GEMINI_API_KEY": "Turns Gemini on for clients whose `llm.provider` is `gemini`; unset: "
    "they run offline.",
    "TWILIO_BASE_URL": "Twilio's API root (tests point it at a stub); unset: Twilio's own.",
    "META_GRAPH_BASE_URL": "Meta Graph API root (WhatsApp Cloud API).",
    "GEMINI_BASE_URL": "Gemini API root (tests point it at the local stub); unset: Google's.",
    "HUBSPOT_BASE_URL": "HubSpot API root.",
    "AIRTABLE_BASE_URL": "Airtable API root.",
    "GOOGLE_CALENDAR_BASE_URL": "Google Calendar API root.",
    "GOOGLE_OAUTH_TOKEN_URL": "Google's OAuth token endpoint (service-account JWT grant).",
    "CALENDLY_BASE_URL": "Calendly API root.",
    "GATEWAY_OUTBOX_POLL_S": "How often the outbox worker looks for due rows, in seconds.",
    "GATEWAY_OUTBOX_MAX_ATTEMPTS": "Delivery attempts after which a row is dead.",
    "GATEWAY_OUTBOX_MAX_AGE_S": "Age (seconds) after which a failing row is dead.",
    "GATEWAY_OUTBOX_BASE_BACKOFF_S": "First retry delay; doubles per attempt (full jitter).",
    "GATEWAY_OUTBOX_MAX_BACKOFF_S": "Longest retry delay.",
    "GATEWAY_SESSION_TTL_S": "Idle lifetime of a conversation session, in seconds.",
    "GATEWAY_LOCK_TIMEOUT_S": "How long a turn waits for its session's lock before it is "
    "answered `busy`.",
    "GATEWAY_WEB_MAX_TEXT_CHARS": "Longest web chat message, in characters.",
    "GATEWAY_WEB_RATE_BURST": "Messages a web connection may send at once before "
    "`GATEWAY_WEB_RATE_PER_S` applies.",
}
"""Descriptions of settings whose field has no docstring or description (keyed by
environment variable)."""

ROUTE_NOTES: dict[str, str] = {
    "/web/chat/{client_id}": "The web chat: JSON frames, see [Web chat](../channels/web-chat.md#protocol).",
    "/twilio/media/{client_id}": "Twilio Media Streams of a call the voice webhook "
    "answered (a one-time stream token in `start`): see [Phone](../channels/phone.md).",
    "/widget.js": "The embeddable chat widget: see "
    "[Web chat](../channels/web-chat.md#embedding-the-widget).",
}
"""Descriptions of routes outside the OpenAPI schema whose endpoint has no docstring."""


# --- shared helpers --------------------------------------------------------------

_ROLE = re.compile(r":[a-z]+(?::[a-z]+)?:`~?([^`<]*?)(?:\s*<[^>]*>)?`")
_DOUBLE_TICKS = re.compile(r"``(.+?)``", re.DOTALL)


def rst_to_md(text: str) -> str:
    """Docstring markup as Markdown: ``code`` -> `code`, :role:`~a.b.c` -> `c`."""

    def role(match: re.Match[str]) -> str:
        target = match.group(1).strip()
        if match.group(0).split("`", 1)[1].startswith("~"):
            target = target.rsplit(".", 1)[-1]
        return f"`{target}`"

    text = _ROLE.sub(role, text)
    text = _DOUBLE_TICKS.sub(r"`\1`", text)
    return re.sub(r"::$", ":", text, flags=re.MULTILINE)


def paragraphs(text: str) -> list[str]:
    """A docstring's paragraphs, each on one line."""
    return [
        " ".join(line.strip() for line in block.splitlines())
        for block in re.split(r"\n\s*\n", inspect.cleandoc(text))
        if block.strip()
    ]


def sentence(text: str) -> str:
    """``text`` starting with a capital and ending with a full stop (``description=``
    strings are written as fragments: "the Pipedrive API token")."""
    text = text.strip()
    if not text:
        return text
    if text[0].islower():
        text = text[0].upper() + text[1:]
    return text if text.endswith((".", "?", "!", ")")) else text + "."


def one_line(text: str) -> str:
    """``text`` as one table cell: one line, pipes escaped."""
    return " ".join(paragraphs(text)).replace("|", "\\|") if text.strip() else ""


def attribute_docs(cls: type) -> dict[str, str]:
    """The docstrings written under a class's attributes (``x: int = 1`` then
    ``\"\"\"...\"\"\"``), base classes first so a subclass's wins."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if klass in (object, BaseModel) or not isinstance(klass, type):
            continue
        try:
            source = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):
            continue
        tree = ast.parse(source)
        if not tree.body or not isinstance(tree.body[0], ast.ClassDef):
            continue
        body = tree.body[0].body
        for prev, node in pairwise(body):
            if (
                isinstance(prev, ast.AnnAssign)
                and isinstance(prev.target, ast.Name)
                and isinstance(node, ast.Expr)
                and isinstance(node.value, ast.Constant)
                and isinstance(node.value.value, str)
            ):
                docs[prev.target.id] = inspect.cleandoc(node.value.value)
    return docs


def class_doc(cls: type) -> str:
    doc = cls.__dict__.get("__doc__")
    return inspect.cleandoc(doc) if isinstance(doc, str) else ""


def render_value(value: object) -> str:
    """A default as YAML-like text: strings quoted, lists in brackets."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, enum.Enum):
        return render_value(value.value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, Path):
        return json.dumps(str(value))
    if isinstance(value, time):
        return json.dumps(value.strftime("%H:%M"))
    if isinstance(value, list | tuple):
        return "[" + ", ".join(render_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {render_value(v)}" for k, v in value.items()) + "}"
    return str(value)


def code(text: str) -> str:
    """``text`` as a code span that is safe in a table cell."""
    return "`" + text.replace("|", "\\|") + "`"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(cell or " " for cell in row) + " |" for row in rows]
    return out


def banner(title: str, source: str) -> list[str]:
    return [
        f"<!-- Generated from {source} by gateway/docsgen.py: do not edit by hand; "
        f"change the source, then run `{REGENERATE}`. -->",
        "",
        f"# {title}",
        "",
    ]


# --- types -------------------------------------------------------------------------

_SCALARS: dict[object, str] = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    Path: "path",
    time: '"HH:MM"',
    NoneType: "null",
}


def is_model(shape: object) -> bool:
    return isinstance(shape, type) and issubclass(shape, BaseModel)


def strip_optional(annotation: Any) -> tuple[Any, bool]:
    """``Annotated[X, ...]`` -> ``X``; ``X | None`` -> ``(X, True)``."""
    optional = False
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, UnionType):
            args = [a for a in get_args(annotation) if a is not NoneType]
            optional = optional or len(args) < len(get_args(annotation))
            if len(args) != 1:
                return Union[tuple(args)], optional  # noqa: UP007 (built from a tuple)
            annotation = args[0]
        else:
            return annotation, optional


def type_name(annotation: Any) -> str:
    shape, optional = strip_optional(annotation)
    origin, args = get_origin(shape), get_args(shape)
    if origin is Literal:
        name = " or ".join(json.dumps(a) for a in args)
    elif origin in (Union, UnionType):
        name = " or ".join(type_name(a) for a in args)
    elif origin in (tuple, list, set, frozenset):
        name = f"list of {type_name(args[0])}" if args else "list"
    elif origin is dict:
        name = f"mapping of {type_name(args[0])} to {type_name(args[1])}" if args else "mapping"
    elif is_model(shape):
        name = "mapping"
    elif isinstance(shape, type) and issubclass(shape, enum.Enum):
        name = " or ".join(json.dumps(m.value) for m in shape)
    else:
        name = _SCALARS.get(shape, getattr(shape, "__name__", str(shape)))
    return f"{name} or null" if optional else name


def constraints(info: FieldInfo) -> list[str]:
    """A field's bounds and pattern, as short text (``>= 0``, ``matches ...``)."""
    out: list[str] = []
    metadata = list(info.metadata)
    annotation = info.annotation
    while get_origin(annotation) is Annotated:  # Annotated[str, Field(pattern=...)]
        for extra in get_args(annotation)[1:]:
            metadata += list(getattr(extra, "metadata", []))
        annotation = get_args(annotation)[0]
    labels = (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))
    for item in metadata:
        for attr, label in labels:
            bound = getattr(item, attr, None)
            if bound is not None:
                out.append(f"{label} {bound}")
        for attr, label in (("min_length", "length >="), ("max_length", "length <=")):
            bound = getattr(item, attr, None)
            if bound is not None:
                out.append(f"{label} {bound}")
        pattern = getattr(item, "pattern", None)
        if isinstance(pattern, str):
            out.append(f"matches {code(pattern)}")
    return out


# --- (a) client config -------------------------------------------------------------


@dataclass(frozen=True)
class ConfigKey:
    path: str
    type: str
    default: str
    description: str


@dataclass(frozen=True)
class ConfigSection:
    path: str
    model: type[BaseModel]
    keys: tuple[ConfigKey, ...]

    @property
    def anchor(self) -> str:
        return section_anchor(self.path)


def section_anchor(path: str) -> str:
    return "top-level" if not path else re.sub(r"[^a-z0-9]+", "-", path.lower()).strip("-")


_DEFAULT_OVERRIDES: dict[str, str] = {
    "client_id": "the folder's name",
}
"""Defaults the loader fills in, not the model."""

_LEAF_OVERRIDES: dict[str, str] = {
    # A mapping validated by its own function: day -> ["HH:MM", "HH:MM"] | closed.
    "business_hours": 'mapping of day (mon ... sun) to ["HH:MM", "HH:MM"] or "closed"',
}


def file_fields(model: type[BaseModel]) -> Iterator[tuple[str, str, FieldInfo]]:
    """(attribute name, key in the file, field) for the keys a file may use."""
    for name, info in model.model_fields.items():
        if info.exclude:
            continue
        yield name, info.alias or name, info


def field_default(info: FieldInfo) -> str:
    if info.default_factory is not None:
        factory: Callable[[], object] = info.default_factory  # type: ignore[assignment]
        return render_value(factory())
    if info.default is PydanticUndefined:
        return "required"
    if isinstance(info.default, BaseModel):
        return ""
    return render_value(info.default)


def config_sections(
    model: type[BaseModel], path: str = "", notes: Mapping[str, str] = CONFIG_NOTES
) -> list[ConfigSection]:
    """The sections of the client config reference, depth first in schema order."""
    docs = attribute_docs(model)
    keys: list[ConfigKey] = []
    below: list[ConfigSection] = []
    for name, key, info in file_fields(model):
        where = f"{path}.{key}" if path else key
        shape, optional = strip_optional(info.annotation)
        element = get_args(shape)[0] if get_origin(shape) in (tuple, list) else None
        text = docs.get(name) or info.description or notes.get(where, "")
        nested: type[BaseModel] | None = None
        sub = where
        if where in _LEAF_OVERRIDES:
            kind = _LEAF_OVERRIDES[where]
        elif is_model(shape):
            nested = shape
            kind = f"mapping, see [below](#{section_anchor(sub)})"
        elif element is not None and is_model(element):
            nested, sub = element, where + "[]"
            kind = f"list of mappings, see [below](#{section_anchor(sub)})"
        else:
            kind = type_name(info.annotation)
            bounds = constraints(info)
            if bounds:
                kind += " (" + ", ".join(bounds) + ")"
        if nested is not None:
            if optional:
                kind += "; optional"
            if not text:
                text = class_doc(nested).split("\n\n", 1)[0]
        default = _DEFAULT_OVERRIDES.get(where) or field_default(info)
        keys.append(ConfigKey(where, kind, default, sentence(rst_to_md(text))))
        if nested is not None:
            below += config_sections(nested, sub, notes)
    return [ConfigSection(path, model, tuple(keys)), *below]


def _default_cell(default: str) -> str:
    if not default:
        return ""
    prose = " " in default and not default.startswith(('"', "[", "{"))
    if default == "required" or prose:  # words, not a value
        return f"*{default}*"
    return code(default)


def config_paths(sections: Sequence[ConfigSection]) -> set[str]:
    return {key.path for section in sections for key in section.keys}


def client_config_page() -> str:
    from engine.config import ClientConfig

    sections = config_sections(ClientConfig)
    unknown = sorted(set(CONFIG_NOTES) - config_paths(sections))
    if unknown:
        raise ValueError(f"docsgen: CONFIG_NOTES names keys the schema lacks: {unknown}")
    bare = [k.path for section in sections for k in section.keys if not k.description]
    if bare:
        raise ValueError(
            f"docsgen: client config keys without a description: {bare}; give the field a "
            "docstring in engine/config.py (or a line in gateway/docsgen.py CONFIG_NOTES)"
        )
    lines = banner("Client config reference", "engine/config.py")
    lines += [
        "Each client business is one folder under `clients/`; its `config.yaml` is "
        "validated at start-up into the frozen pydantic models of `engine/config.py`. "
        "This page lists every key the file may use, with its dotted path. How the file is "
        "read (`${ENV_VAR}` secrets, unknown keys, an invalid folder) is explained in "
        "[Getting started](../getting-started.md#how-the-folder-is-read).",
        "",
        "Types: `list of X` is a YAML list, `mapping` a YAML mapping; `or null` means the "
        "key may be left out (or set to an unset `${ENV_VAR}`). A key marked *required* "
        "must be given (inside an optional block: when the block is given).",
        "",
        "## Sections",
        "",
    ]
    for section in sections:
        label = section.path or "top level"
        lines.append(f"- [{label}](#{section.anchor})")
    lines.append("")
    for section in sections:
        title = section.path or "Top level"
        lines += [f"## {title} {{#{section.anchor}}}", ""]
        intro = class_doc(section.model)
        if intro and section.path:
            for para in paragraphs(intro):
                lines += [rst_to_md(para), ""]
        rows = [
            [
                code(k.path),
                one_line(k.type),
                _default_cell(k.default),
                one_line(k.description),
            ]
            for k in section.keys
        ]
        lines += table(("key", "type", "default", "description"), rows)
        lines.append("")
    example = (ROOT / EXAMPLE_CLIENT).read_text(encoding="utf-8")
    lines += [
        "## Example",
        "",
        f"The reference client folder, `{EXAMPLE_CLIENT}`:",
        "",
        "```yaml",
        example.rstrip("\n"),
        "```",
        "",
    ]
    return "\n".join(lines)


# --- (b) settings ------------------------------------------------------------------


_SETTING_DEFAULTS: dict[str, str] = {
    "GATEWAY_MODELS_DIR": "<GATEWAY_DATA_DIR>/models",
}
"""Defaults computed from other settings (shown instead of ``null``)."""


def env_names(info: FieldInfo, name: str) -> list[str]:
    alias = info.validation_alias
    if isinstance(alias, str):
        return [alias]
    if isinstance(alias, AliasChoices):
        return [c for c in alias.choices if isinstance(c, str)]
    return [name.upper()]


def settings_page() -> str:
    from gateway.settings import Settings

    docs = attribute_docs(Settings)
    rows: list[tuple[str, list[str]]] = []
    seen: set[str] = set()
    for name, info in Settings.model_fields.items():
        envs = env_names(info, name)
        seen.update(envs)
        text = docs.get(name) or info.description or SETTING_NOTES.get(envs[0], "")
        if not text:
            raise ValueError(f"docsgen: setting {envs[0]} has no description; add a docstring")
        kind = type_name(info.annotation)
        bounds = constraints(info)
        if bounds:
            kind += " (" + ", ".join(bounds) + ")"
        default = _SETTING_DEFAULTS.get(envs[0]) or field_default(info)
        cells = [
            " ".join(code(e) for e in envs),
            one_line(kind),
            _default_cell(default),
            one_line(sentence(rst_to_md(text))),
        ]
        rows.append((envs[0], cells))
    unknown = sorted(set(SETTING_NOTES) - seen)
    if unknown:
        raise ValueError(f"docsgen: SETTING_NOTES names settings that do not exist: {unknown}")
    lines = banner("Settings reference", "gateway/settings.py")
    lines += [
        "The gateway reads its settings once, at start-up, from the environment and from "
        "an optional `.env` file in the working directory (`gateway/settings.py`, "
        "pydantic-settings). Values are validated: a malformed one stops the gateway with "
        "the variable's name. Per-client settings are in the client folders instead "
        "([client config reference](client-config.md)).",
        "",
        "`null` as a default means unset. Outside this table: uvicorn's own "
        "`FORWARDED_ALLOW_IPS` (which proxies `X-Forwarded-For` is taken from; see "
        "[Operations](../operations.md#reverse-proxies)) and the test suite's "
        "`GATEWAY_TEST_*` variables ([Development](../development.md)).",
        "",
    ]
    lines += table(
        ("environment variable", "type", "default", "description"),
        [cells for _, cells in sorted(rows)],
    )
    lines.append("")
    return "\n".join(lines)


# --- (c) HTTP API ------------------------------------------------------------------

_METHODS = ("get", "head", "post", "put", "patch", "delete", "options")
_MODULE_REF = re.compile(r"\s*\(see the module docstring\)")
"""Route docstrings point at their module's docstring; here the group intro links
the page that explains it."""


def schema_type(schema: Mapping[str, Any]) -> str:
    if "anyOf" in schema:
        return " or ".join(schema_type(s) for s in schema["anyOf"])
    if "const" in schema:
        return json.dumps(schema["const"])
    if "enum" in schema:
        return " or ".join(json.dumps(v) for v in schema["enum"])
    if "$ref" in schema:
        return str(schema["$ref"]).rsplit("/", 1)[-1]
    kind = schema.get("type")
    if kind == "array":
        return f"list of {schema_type(schema.get('items', {}))}"
    return str(kind) if kind else "any"


def _resolve(spec: Mapping[str, Any], schema: Mapping[str, Any]) -> Mapping[str, Any]:
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
        found: Mapping[str, Any] = spec["components"]["schemas"][ref.rsplit("/", 1)[-1]]
        return found
    return schema


def describe_operation(
    spec: Mapping[str, Any], method: str, path: str, op: Mapping[str, Any]
) -> list[str]:
    """One operation: heading, description, parameters, request body, responses."""
    lines = [f"### `{method.upper()} {path}`", ""]
    summary = str(op.get("summary", ""))
    description = str(op.get("description", ""))
    description = _MODULE_REF.sub("", description)
    if description:
        lines += [p for text in paragraphs(rst_to_md(description)) for p in (text, "")]
    elif summary:
        lines += [summary, ""]
    params = op.get("parameters", [])
    if params:
        rows = []
        for param in params:
            schema = param.get("schema", {})
            default = schema.get("default")
            rows.append(
                [
                    code(str(param["name"])),
                    str(param.get("in", "")),
                    "yes" if param.get("required") else "no",
                    one_line(schema_type(schema)),
                    code(render_value(default)) if "default" in schema else "",
                    one_line(rst_to_md(str(param.get("description", "")))),
                ]
            )
        lines += table(("parameter", "in", "required", "type", "default", "description"), rows)
        lines.append("")
    body = op.get("requestBody")
    if body:
        for media, content in sorted(body.get("content", {}).items()):
            schema = _resolve(spec, content.get("schema", {}))
            lines += [f"Request body (`{media}`):", ""]
            props: Mapping[str, Any] = schema.get("properties", {})
            required = set(schema.get("required", []))
            rows = [
                [
                    code(name),
                    "yes" if name in required else "no",
                    one_line(schema_type(prop)),
                    one_line(rst_to_md(str(prop.get("description", "")))),
                ]
                for name, prop in props.items()
            ]
            lines += table(("field", "required", "type", "description"), rows)
            lines.append("")
    responses = op.get("responses", {})
    if responses:
        codes = ", ".join(
            f"{status} {responses[status].get('description', '')}".strip()
            for status in sorted(responses)
        )
        lines += [f"Responses in the schema: {codes}.", ""]
    return lines


_API_GROUPS: dict[str, str] = {
    "Operations": "Liveness, readiness and Prometheus metrics: see "
    "[Operations](../operations.md#health-readiness-metrics).",
    "Admin API": "Bearer `GATEWAY_ADMIN_TOKEN`. Leads: "
    "[lead capture](../lead-capture.md#leads); conversations, staff replies and release: "
    "[takeover](../takeover.md); approvals: "
    "[human approval](../lead-capture.md#human-approval); contacts: "
    "[personal data](../security.md#personal-data); calls: "
    "[phone](../channels/phone.md#metrics-and-call-traces); messages: "
    "[WhatsApp and SMS](../channels/whatsapp-sms.md#replies); calendar conflicts: "
    "[integrations](../integrations.md#calendars).",
    "Vendor webhooks": "Called by Twilio and Meta, signed by them: "
    "[phone](../channels/phone.md#connecting-a-twilio-number), "
    "[WhatsApp and SMS](../channels/whatsapp-sms.md#connecting). The form and JSON "
    "bodies are the vendors' own, read by the channel.",
    "Calendar feed": "[Calendar feed](../integrations.md#calendar-feed).",
    "Other": "",
}


def _api_group(path: str) -> str:
    if path.startswith("/admin/"):
        return "Admin API"
    if path.startswith(("/twilio/", "/meta/")):
        return "Vendor webhooks"
    if path.startswith("/calendar/"):
        return "Calendar feed"
    if path in ("/healthz", "/readyz", "/metrics"):
        return "Operations"
    return "Other"


def http_api_page() -> str:
    from gateway.app import create_app
    from gateway.settings import Settings

    app = _quietly(lambda: create_app(Settings.model_construct()))
    spec = app.openapi()
    lines = banner("HTTP API reference", "the app's OpenAPI schema (gateway/app.py)")
    lines += [
        "Every route of `gateway.app.create_app`, from the app's OpenAPI schema "
        "(FastAPI; the app serves no `/docs` page). `/admin/api/*` needs "
        "`Authorization: Bearer <GATEWAY_ADMIN_TOKEN>` and answers 404 while that "
        "setting is unset. Vendor webhooks check the vendor's signature (see "
        "[Security](../security.md)).",
        "",
    ]
    groups: dict[str, list[tuple[str, str, Mapping[str, Any]]]] = {}
    for path in sorted(spec.get("paths", {})):
        for method in _METHODS:
            op = spec["paths"][path].get(method)
            if op is not None:
                groups.setdefault(_api_group(path), []).append((path, method, op))
    for group, intro in _API_GROUPS.items():
        if group not in groups:
            continue
        lines += [f"## {group}", ""]
        if intro:
            lines += [intro, ""]
        for path, method, op in groups[group]:
            lines += describe_operation(spec, method, path, op)
    sockets: list[tuple[str, str]] = []
    hidden: list[tuple[str, str, str]] = []
    for route in _flat_routes(app.routes):
        path = str(getattr(route, "path", ""))
        methods = getattr(route, "methods", None)
        doc = _first_line(getattr(route, "endpoint", None)) or ROUTE_NOTES.get(path, "")
        if methods is None:  # a WebSocket route
            sockets.append((path, doc))
        elif not getattr(route, "include_in_schema", True) and path != app.openapi_url:
            hidden.append((path, ", ".join(sorted(methods)), doc))
    listed = {path for path, _ in sockets} | {path for path, _, _ in hidden}
    unknown = sorted(set(ROUTE_NOTES) - listed)
    if unknown:
        raise ValueError(f"docsgen: ROUTE_NOTES names routes that do not exist: {unknown}")
    bare = sorted([p for p, d in sockets if not d] + [p for p, _, d in hidden if not d])
    if bare:
        raise ValueError(f"docsgen: routes without a description: {bare}; add ROUTE_NOTES")
    lines += ["## WebSocket routes", "", "Not part of the OpenAPI schema.", ""]
    lines += table(
        ("path", "description"),
        [[code(p), one_line(rst_to_md(d))] for p, d in sorted(sockets)],
    )
    lines.append("")
    if hidden:
        lines += ["## Routes outside the schema", ""]
        lines += table(
            ("path", "methods", "description"),
            [[code(p), m, one_line(rst_to_md(d))] for p, m, d in sorted(hidden)],
        )
        lines.append("")
    return "\n".join(lines)


def _flat_routes(routes: Sequence[Any], prefix: str = "") -> Iterator[Any]:
    """The app's routes, included routers unfolded (FastAPI keeps an included
    router as one wrapper route holding the router)."""
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            context = getattr(route, "include_context", None)
            yield from _flat_routes(inner.routes, prefix + str(getattr(context, "prefix", "")))
        elif prefix:
            yield _Prefixed(prefix + str(route.path), route)
        else:
            yield route


@dataclass(frozen=True)
class _Prefixed:
    path: str
    route: Any

    def __getattr__(self, name: str) -> Any:
        return getattr(self.route, name)


def _first_line(func: object) -> str:
    doc = getattr(func, "__doc__", None)
    return paragraphs(doc)[0] if isinstance(doc, str) and doc.strip() else ""


def _quietly(build: Callable[[], Any]) -> Any:
    """Run ``build`` (which configures logging) and put the root logger back as it was."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    noisy = {name: logging.getLogger(name).level for name in ("httpx", "httpcore")}
    try:
        return build()
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        for name, value in noisy.items():
            logging.getLogger(name).setLevel(value)


# --- (d) CLI -----------------------------------------------------------------------


def _click_root() -> Any:
    import typer

    from gateway.cli import app

    return typer.main.get_command(app)


def _walk_commands(command: Any, ctx: Any) -> Iterator[tuple[Any, Any]]:
    """Every command below ``command``, depth first in declared order. Typer ships
    its own copy of click, so groups and parameters are recognised by shape."""
    yield command, ctx
    if hasattr(command, "list_commands"):
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is None or getattr(sub, "hidden", False):
                continue
            yield from _walk_commands(sub, sub.context_class(sub, info_name=name, parent=ctx))


def _commands() -> list[tuple[str, Any, Any]]:
    root = _click_root()
    ctx = root.context_class(root, info_name="gateway")
    return [
        (str(cmd_ctx.command_path), command, cmd_ctx)
        for command, cmd_ctx in _walk_commands(root, ctx)
        if not hasattr(command, "list_commands")
    ]


def cli_commands() -> list[str]:
    """Every runnable ``gateway`` command path (``gateway clients validate``...)."""
    return [path for path, _, _ in _commands()]


def _param_row(param: Any) -> list[str]:
    opts: list[str] = [*param.opts, *getattr(param, "secondary_opts", [])]
    is_argument = not any(o.startswith("-") for o in opts)
    is_flag = bool(getattr(param, "is_flag", False))
    annotation = getattr(getattr(param, "type_descriptor", None), "annotation", None)
    if annotation is None:  # plain click: the parameter's type
        annotation = str
    shape, _ = strip_optional(annotation)
    repeatable = get_origin(shape) in (list, tuple) or param.nargs == -1
    if repeatable and get_args(shape):
        shape = get_args(shape)[0]
    metavar = getattr(param, "metavar", None)
    if is_argument:
        name, kind = code(str(metavar or param.name).upper()), "argument"
    else:
        name, kind = code(" / ".join(opts)), "flag" if is_flag else "option"
    if repeatable:
        kind += ", repeatable"
    type_text = "boolean" if is_flag else type_name(shape)
    if metavar and not is_argument:  # a value parsed by the command itself (7d, 12h)
        type_text = str(metavar).lower()
    bounds = [
        f"{label} {value}"
        for label, value in (
            (">=", getattr(param, "min", None)),
            ("<=", getattr(param, "max", None)),
        )
        if value is not None
    ]
    if bounds:
        type_text += " (" + ", ".join(bounds) + ")"
    default = param.default
    if callable(default) or default is None or default in ((), []):
        shown = ""
    else:
        shown = code(render_value(default).strip('"'))
    help_text = str(getattr(param, "help", "") or "")
    envvar = getattr(param, "envvar", None)
    if isinstance(envvar, str):
        help_text += f" (environment: `{envvar}`)"
    return [
        name,
        f"{kind}, {one_line(type_text)}",
        "yes" if param.required else "no",
        shown,
        one_line(help_text),
    ]


def cli_page() -> str:
    lines = banner("CLI reference", "gateway/cli.py")
    lines += [
        "Every `gateway` command with its arguments and options (`gateway --help`, "
        "`gateway COMMAND --help` print the same). An overview with what each command is "
        "for: [The gateway command](../cli.md).",
        "",
        "Exit codes: 0 done; 1 the command ran and found a problem (an unreachable "
        "database, a schema behind, an unknown row id, an invalid client folder); 2 bad "
        "usage (an option's value, an unparseable setting).",
        "",
    ]
    for path, command, ctx in _commands():
        usage = " ".join([path, *command.collect_usage_pieces(ctx)])
        lines += [f"## {path}", "", "```", usage, "```", ""]
        help_text = inspect.cleandoc(command.help or "").replace("\b\n", "")
        for para in paragraphs(help_text):
            lines += [rst_to_md(para), ""]
        params = [p for p in command.get_params(ctx) if p.name != "help"]
        if params:
            lines += table(
                ("name", "kind", "required", "default", "description"),
                [_param_row(p) for p in params],
            )
            lines.append("")
    return "\n".join(lines)


# --- pages -------------------------------------------------------------------------

PAGES: dict[str, Callable[[], str]] = {
    "docs/reference/cli.md": cli_page,
    "docs/reference/client-config.md": client_config_page,
    "docs/reference/http-api.md": http_api_page,
    "docs/reference/settings.md": settings_page,
}
"""Each generated page (path relative to the checkout) and what renders it."""


def render_pages() -> dict[str, str]:
    """Every generated page's text, by path relative to the checkout."""
    return {path: _normalise(render()) for path, render in sorted(PAGES.items())}


def _normalise(text: str) -> str:
    lines = [line.rstrip() for line in text.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines) + "\n"


def stale_pages(root: Path = ROOT, pages: Mapping[str, str] | None = None) -> list[str]:
    """The generated pages whose file under ``root`` differs from ``pages`` (or is missing)."""
    pages = render_pages() if pages is None else pages
    stale = []
    for path, text in sorted(pages.items()):
        file = root / path
        if not file.is_file() or file.read_text(encoding="utf-8") != text:
            stale.append(path)
    return stale


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gateway.docsgen",
        description="Write the generated reference pages of the documentation site.",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 naming every page that differs from the code",
    )
    parser.add_argument(
        "--root", type=Path, default=ROOT, help="where the pages are (default: this checkout)"
    )
    args = parser.parse_args(argv)
    root: Path = args.root
    pages = render_pages()
    if args.check:
        stale = stale_pages(root, pages)
        for path in stale:
            print(f"docsgen: {path} differs from the code", file=sys.stderr)
        if stale:
            print(f"docsgen: run `{REGENERATE}` and commit the result", file=sys.stderr)
            return 1
        print(f"docsgen: {len(pages)} generated pages are current")
        return 0
    for path, text in pages.items():
        file = root / path
        file.parent.mkdir(parents=True, exist_ok=True)
        if not file.is_file() or file.read_text(encoding="utf-8") != text:
            file.write_text(text, encoding="utf-8")
            print(f"docsgen: wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
