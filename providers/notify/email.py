"""Escalations by email over SMTP (``escalation.to_email``, server from
``GATEWAY_SMTP_URL``): :func:`render_email` builds the message,
:class:`EmailNotifier` sends it with ``aiosmtplib``. Reply codes follow RFC 5321
section 4.2: ``4yz`` is a transient failure (retryable, like timeouts and
connection errors), ``5yz`` a permanent one (a refused recipient, wrong
credentials). The ``Message-ID`` is derived from ``escalation_id`` so mail
systems that deduplicate on it show a retried notice once.
"""

from __future__ import annotations

import email.errors
import hashlib
import ipaddress
import logging
import ssl
from dataclasses import dataclass, field
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime
from urllib.parse import unquote, urlsplit

import aiosmtplib

from engine.providers import CallOptions
from engine.tools.notify import DeliveryError, Escalation, Notifier
from providers.notify.text import (
    CHANNEL_LABELS,
    LINE_MAX,
    MSGID_LEFT,
    ROLE_LABELS,
    SUBJECT_MAX,
    clip,
    one_line,
)

__all__ = ["EmailNotifier", "SmtpSettings", "parse_smtp_url", "render_email"]

log = logging.getLogger("providers.notify.email")


def render_email(esc: Escalation, to_addr: str, from_addr: str) -> EmailMessage:
    """The notice for ``esc`` as a plain-text email from ``from_addr`` to ``to_addr``.

    Headers: ``Subject: [<client name>] Customer <reason> (<channel>)``,
    ``From`` (display name "<client name> receptionist"), ``To``, ``Date``
    (``created_at``), ``Message-ID: <escalation.<id>@<from domain>>`` (the
    same for every retry of one escalation; an id that is not a plain dot-atom
    is replaced by its SHA-256), ``X-Gateway-Escalation-Id``,
    ``X-Gateway-Client-Id`` and ``Auto-Submitted: auto-generated`` (RFC 3834,
    so auto-responders stay quiet). The body is UTF-8, quoted-printable, so
    any name survives any relay; non-ASCII headers are RFC 2047-encoded when
    sent.

    Raises ``ValueError`` when ``to_addr`` or ``from_addr`` is not an email
    address.
    """
    try:
        sender = Address(
            display_name=f"{one_line(esc.client_name)} receptionist", addr_spec=from_addr
        )
        recipient = Address(addr_spec=to_addr)
    except (ValueError, IndexError, email.errors.HeaderParseError) as exc:
        raise ValueError(
            "email notice: the sender or recipient is not an email address "
            "(check escalation.to_email and the From address)"
        ) from exc

    msg = EmailMessage()
    msg["Subject"] = clip(
        one_line(f"[{esc.client_name}] Customer {esc.reason} ({esc.channel})"), SUBJECT_MAX
    )
    msg["From"] = sender
    msg["To"] = recipient
    msg["Date"] = format_datetime(esc.created_at)
    msg["Message-ID"] = _message_id(esc.escalation_id, sender.domain)
    msg["X-Gateway-Escalation-Id"] = esc.escalation_id
    msg["X-Gateway-Client-Id"] = one_line(esc.client_id)
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content(_email_body(esc), charset="utf-8", cte="quoted-printable")
    return msg


def _message_id(escalation_id: str, domain: str) -> str:
    left = escalation_id
    if not MSGID_LEFT.match(left) or len(left) > 64:
        left = hashlib.sha256(escalation_id.encode()).hexdigest()[:40]
    return f"<escalation.{left}@{domain or 'gateway.invalid'}>"


def _email_body(esc: Escalation) -> str:
    def line(text: str) -> str:
        return clip(one_line(text), LINE_MAX)

    channel = CHANNEL_LABELS[esc.channel]
    out = [
        f"A customer on {channel} {line(esc.reason)}.",
        "",
        f"Who:      {line(esc.who) if esc.who else '(not given)'}",
        f"Phone:    {esc.contact or '(not given)'}",
        f"Email:    {line(esc.email) if esc.email else '(not given)'}",
        f"Channel:  {channel}",
        f"Reason:   {line(esc.reason)}",
    ]
    if esc.question:
        out += [f"Question: {line(esc.question)}"]
    if esc.link:
        out += [f"Open:     {esc.link}"]
    if esc.approval:
        out += ["", "Needs your decision", *(f"  {line}" for line in esc.approval.lines())]
    out += [
        "",
        "Captured",
    ]
    out += [f"  {line(k)}: {line(v)}" for k, v in esc.fields.items()] or ["  (nothing yet)"]
    out += ["", f"Last {len(esc.transcript)} lines" if esc.transcript else "Conversation"]
    out += [f"  {ROLE_LABELS[role]}: {line(text)}" for role, text in esc.transcript] or [
        "  (no messages)"
    ]
    out += [
        "",
        "--",
        f"Session {esc.session_id} · escalation {esc.escalation_id} · "
        f"{esc.created_at.isoformat(timespec='seconds')}",
        "",
    ]
    return "\n".join(out)


@dataclass(frozen=True, slots=True)
class SmtpSettings:
    """An SMTP server as given by ``GATEWAY_SMTP_URL`` (see :func:`parse_smtp_url`).

    ``use_tls`` is implicit TLS from the first byte (``smtps``). ``start_tls``
    is ``True`` (STARTTLS required), ``False`` (never) or ``None`` (used when
    the server offers it). ``port`` is a TCP port.
    """

    host: str
    port: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    use_tls: bool = False
    start_tls: bool | None = None

    @property
    def redacted_url(self) -> str:
        """The URL with the password replaced by ``***`` (for messages and logs)."""
        scheme = "smtps" if self.use_tls else "smtp"
        auth = f"{self.username}:***@" if self.username is not None else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{auth}{host}:{self.port}"


_SMTP_FORMS = (
    "expected smtp://[user:password@]host[:port] (STARTTLS; port 25 by default) or "
    "smtps://[user:password@]host[:port] (implicit TLS; port 465 by default), "
    "with special characters in user and password percent-encoded ('@' as %40, '/' as %2F)"
)


def parse_smtp_url(url: str) -> SmtpSettings:
    """Read ``GATEWAY_SMTP_URL``.

    Forms: ``smtp://user:pass@host:587`` (login after STARTTLS, which port 587
    requires), ``smtps://user:pass@host:465`` (implicit TLS),
    ``smtp://host:25`` (no login; STARTTLS when the server offers it). User
    and password are percent-decoded. With credentials, ``smtp://`` requires
    STARTTLS on any port unless the host is a loopback address, so a password
    never crosses a network in clear.

    Raises ``ValueError`` naming what is wrong and the expected forms; the
    password is never part of the message.
    """
    shown = _redact_url(url)
    try:
        parts = urlsplit(url.strip())
        scheme = parts.scheme.lower()
        host = parts.hostname
        port = parts.port
    except ValueError as exc:
        raise ValueError(
            f"SMTP URL {shown!r}: the port is not a number from 1 to 65535; {_SMTP_FORMS}"
        ) from exc
    if scheme not in ("smtp", "smtps"):
        raise ValueError(f"SMTP URL {shown!r}: the scheme must be smtp or smtps; {_SMTP_FORMS}")
    if not host:
        raise ValueError(f"SMTP URL {shown!r}: no host; {_SMTP_FORMS}")
    if port == 0:
        raise ValueError(f"SMTP URL {shown!r}: port 0 is not a port; {_SMTP_FORMS}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(
            f"SMTP URL {shown!r}: unexpected path, query or fragment after the host; {_SMTP_FORMS}"
        )
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    if (username is None and password) or (username is not None and not password):
        raise ValueError(
            f"SMTP URL {shown!r}: give both a user and a password, or neither; {_SMTP_FORMS}"
        )
    use_tls = scheme == "smtps"
    if port is None:
        port = 465 if use_tls else 25
    start_tls: bool | None
    if use_tls:
        start_tls = False
    elif port == 587 or (username is not None and not _is_loopback(host)):
        start_tls = True
    else:
        start_tls = None
    return SmtpSettings(
        host=host,
        port=port,
        username=username,
        password=password,
        use_tls=use_tls,
        start_tls=start_tls,
    )


def _redact_url(url: str) -> str:
    """``url`` with anything between ``user:`` and the last ``@`` replaced by ``***``."""
    url = url.strip()
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    userinfo, _, hostpart = rest.rpartition("@")
    user, colon, _ = userinfo.partition(":")
    return f"{scheme}://{user}{':***' if colon else ''}@{hostpart}"


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _default_from(host: str) -> str:
    """``gateway@<host>``; an IP address becomes an RFC 5321 address literal."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return f"gateway@{host}"
    return f"gateway@[IPv6:{ip}]" if ip.version == 6 else f"gateway@[{ip}]"


class EmailNotifier(Notifier):
    """Email escalations through one SMTP server.

    ``smtp_url`` is ``GATEWAY_SMTP_URL`` (forms in :func:`parse_smtp_url`;
    ``ValueError`` when malformed). ``from_addr`` is the envelope and header
    sender, by default ``gateway@<SMTP host>``. ``timeout_s`` bounds each SMTP
    step (connect, each command), in seconds. One connection per :meth:`send`:
    escalations are rare, and a fresh connection never finds a stale one.
    """

    name = "email"

    def __init__(
        self, smtp_url: str, from_addr: str | None = None, *, timeout_s: float = 10.0
    ) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        self.settings = parse_smtp_url(smtp_url)
        self.from_addr = from_addr or _default_from(self.settings.host)
        try:
            Address(addr_spec=self.from_addr)
        except (ValueError, IndexError, email.errors.HeaderParseError) as exc:
            raise ValueError("EmailNotifier: from_addr is not an email address") from exc
        self._timeout_s = timeout_s
        # Each SMTP step bounds itself; the base's bound covers a whole session.
        self.options = CallOptions(timeout_s=6 * timeout_s + 5.0, max_attempts=1)

    async def _send_impl(self, to_addr: str, esc: Escalation, /) -> None:
        """Email :func:`render_email` of ``esc`` to ``to_addr``; one attempt.

        Raises :class:`DeliveryError` with ``tool="email"`` and ``status`` the
        SMTP reply code when there is one: retryable for ``4yz`` replies
        (RFC 5321 4.2.1, transient), timeouts, refused or dropped connections;
        not retryable for ``5yz`` replies (permanent: unknown recipient, bad
        credentials...), a TLS certificate that does not verify, a server
        without STARTTLS when it is required, or an invalid ``to_addr``.
        """
        server = self.settings.redacted_url
        what = f"escalation {esc.escalation_id} via {server}"
        try:
            message = render_email(esc, to_addr, self.from_addr)
        except ValueError as exc:
            raise DeliveryError("email", f"{what}: {exc}", retryable=False) from exc
        s = self.settings
        try:
            await aiosmtplib.send(
                message,
                sender=self.from_addr,
                recipients=[to_addr],
                hostname=s.host,
                port=s.port,
                username=s.username,
                password=s.password,
                use_tls=s.use_tls,
                start_tls=s.start_tls,
                timeout=self._timeout_s,
            )
        except aiosmtplib.SMTPException as exc:
            raise _smtp_error(what, exc) from exc
        except OSError as exc:  # raised below aiosmtplib's own mapping (TLS upgrade)
            raise _cert_error(what, exc) or DeliveryError(
                "email", f"{what}: {type(exc).__name__}: {exc}", retryable=True
            ) from exc
        log.info(
            "escalation %s delivered by email (client=%s, channel=%s)",
            esc.escalation_id,
            esc.client_id,
            esc.channel,
        )


def _smtp_error(what: str, exc: aiosmtplib.SMTPException) -> DeliveryError:
    """Map an aiosmtplib error by RFC 5321 reply class: 4yz transient, 5yz permanent."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        codes = [r.code for r in exc.recipients]
        detail = "; ".join(f"{r.code} {clip(one_line(r.message), 200)}" for r in exc.recipients)
        return DeliveryError(
            "email",
            f"{what}: recipient refused: {detail}",
            retryable=all(400 <= code < 500 for code in codes),
            status=codes[0] if codes else None,
        )
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        code = exc.code
        reply = f"{code} {clip(one_line(exc.message), 200)}"
        step = {
            aiosmtplib.SMTPAuthenticationError: "login refused",
            aiosmtplib.SMTPSenderRefused: "sender refused",
            aiosmtplib.SMTPRecipientRefused: "recipient refused",
            aiosmtplib.SMTPDataError: "message refused",
            aiosmtplib.SMTPHeloError: "greeting refused",
            aiosmtplib.SMTPConnectResponseError: "connection refused by the server",
        }.get(type(exc), "server error")
        permanent = 500 <= code < 600
        reason = f"{what}: {step}: {reply}"
        if permanent and isinstance(exc, aiosmtplib.SMTPAuthenticationError):
            reason += "; check the user and password in GATEWAY_SMTP_URL"
        elif permanent and isinstance(exc, aiosmtplib.SMTPSenderRefused):
            reason += "; the server does not accept this From address"
        return DeliveryError("email", reason, retryable=not permanent, status=code)
    cert_error = _cert_error(what, exc)
    if cert_error is not None:
        return cert_error
    if isinstance(
        exc,
        aiosmtplib.SMTPTimeoutError
        | aiosmtplib.SMTPConnectError
        | aiosmtplib.SMTPServerDisconnected,
    ):
        return DeliveryError("email", f"{what}: {type(exc).__name__}: {exc}", retryable=True)
    # SMTPNotSupported and the base class: STARTTLS or AUTH missing on the
    # server, or options that do not fit together. Configuration, not luck.
    return DeliveryError(
        "email",
        f"{what}: {type(exc).__name__}: {exc}; check GATEWAY_SMTP_URL against the server",
        retryable=False,
    )


def _cert_error(what: str, exc: BaseException) -> DeliveryError | None:
    """A non-retryable error if ``exc`` is, or was caused by, a failed certificate check."""
    seen: BaseException | None = exc
    for _ in range(3):  # the SSL error sits at most a couple of links down
        if seen is None:
            return None
        if isinstance(seen, ssl.SSLCertVerificationError):
            return DeliveryError(
                "email",
                f"{what}: the server's TLS certificate does not verify "
                f"({seen.verify_message}); check the host in GATEWAY_SMTP_URL",
                retryable=False,
            )
        seen = seen.__cause__ or seen.__context__
    return None
