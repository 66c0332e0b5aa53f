"""Escalations to Slack, through an incoming webhook (``escalation.to_slack_webhook``):
:func:`render_slack` builds the Block Kit payload, :class:`SlackNotifier` POSTs it.
Wire format from Slack's docs, "Sending messages using incoming webhooks"
(``api.slack.com/messaging/webhooks``, "Handling errors") and the Block Kit
reference (``api.slack.com/reference/block-kit/blocks``)::

    POST https://hooks.slack.com/services/T.../B.../<secret>
    Content-Type: application/json

    {"text": "<fallback>", "blocks": [...]}

Slack answers ``200`` with the body ``ok``; a ``4xx`` with a short error string
as the body (``400 invalid_payload``, ``403 invalid_token``, ``403
action_prohibited``, ``404 no_service``, ``404 channel_not_found``, ``410
channel_is_archived``...); ``429`` with ``Retry-After`` (seconds) when rate
limited (about one message per second per webhook); ``5xx`` on outages. The
webhook URL's path is a secret: it never appears in an error or a log line
written here. ``retryable`` is true for ``429``/``5xx``/timeouts/connection
errors. Slack incoming webhooks have no idempotency key, so a retry after a
lost ``200`` posts the notice twice.
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

import httpx

from engine.providers import CallOptions
from engine.tools.notify import DeliveryError, Escalation, Notifier
from providers.http import retry_after_s
from providers.notify.text import (
    CHANNEL_LABELS,
    LINE_MAX,
    ROLE_LABELS,
    clip,
    clip_mrkdwn,
    mrkdwn,
    one_line,
    summary,
)

__all__ = ["SlackNotifier", "render_slack"]

log = logging.getLogger("providers.notify.slack")

# Slack Block Kit limits, in characters (Block Kit reference: header block,
# section block, text object).
SLACK_HEADER_MAX = 150
SLACK_SECTION_TEXT_MAX = 3000
SLACK_FIELD_TEXT_MAX = 2000
SLACK_FALLBACK_TEXT_MAX = 500  # Slack allows 40,000; a notification preview needs far less


def render_slack(esc: Escalation) -> dict[str, object]:
    """The Slack incoming-webhook payload for ``esc``.

    Shape (Block Kit, ``api.slack.com/reference/block-kit/blocks``)::

        {"text": "<summary, the notification fallback>",
         "blocks": [
           {"type": "header", "text": {"type": "plain_text", "text": ...}},
           {"type": "section", "fields": [who, contact, channel, reason]},
           {"type": "section", "text": {"type": "mrkdwn", "text": "*Question* > ..."}},
           {"type": "section", "text": {"type": "mrkdwn", "text": "*Captured* ..."}},
           {"type": "section", "text": {"type": "mrkdwn", "text": "*Last lines* > ..."}},
           {"type": "section", "text": {"type": "mrkdwn",
                                        "text": "<link|Open the conversation> ..."}},
           {"type": "context", "elements": [session, escalation id, time]}],
         "unfurl_links": false, "unfurl_media": false}

    The *Question* section (the customer's last message) appears when
    ``question`` is set; the link section when ``link`` is (a
    ``GATEWAY_PUBLIC_URL`` is configured), with how staff answer in the chat.

    User text is escaped (``&``, ``<``, ``>``) in every ``mrkdwn`` text and
    clipped to Slack's limits: header 150 characters, section text 3,000,
    section field 2,000. When the transcript does not fit, the oldest lines
    are left out first.
    """
    channel = CHANNEL_LABELS[esc.channel]
    header = clip(one_line(f"{esc.client_name}: customer {esc.reason}"), SLACK_HEADER_MAX)

    who = mrkdwn(clip(one_line(esc.who), LINE_MAX)) if esc.who else "_not given_"
    contact_lines = [mrkdwn(v) for v in (esc.contact, esc.email) if v]
    contact = "\n".join(contact_lines) if contact_lines else "_none captured_"
    info_fields = [
        ("Who", who),
        ("Contact", contact),
        ("Channel", channel),
        ("Reason", mrkdwn(one_line(esc.reason))),
    ]

    blocks: list[dict[str, object]] = [
        {"type": "header", "text": {"type": "plain_text", "text": header, "emoji": True}},
        {
            "type": "section",
            "fields": [
                {
                    "type": "mrkdwn",
                    "text": clip_mrkdwn(f"*{label}*\n{value}", SLACK_FIELD_TEXT_MAX),
                }
                for label, value in info_fields
            ],
        },
    ]
    if esc.approval:
        ask = esc.approval.lines()
        blocks.append(
            {
                "type": "section",
                "text": {
                    "type": "mrkdwn",
                    "text": clip_mrkdwn(
                        "*Needs your decision*\n"
                        + "\n".join(f"`{mrkdwn(line)}`" for line in ask[:2])
                        + f"\n{mrkdwn(ask[2])}",
                        SLACK_SECTION_TEXT_MAX,
                    ),
                },
            }
        )
    if esc.question:
        question = mrkdwn(clip(one_line(esc.question), LINE_MAX))
        blocks.append(
            {"type": "section", "text": {"type": "mrkdwn", "text": f"*Question*\n>{question}"}}
        )
    blocks += [
        {"type": "section", "text": {"type": "mrkdwn", "text": _slack_captured(esc)}},
        {"type": "section", "text": {"type": "mrkdwn", "text": _slack_transcript(esc)}},
    ]
    if esc.link:
        blocks.append(
            {
                "type": "section",
                "text": {
                    "type": "mrkdwn",
                    "text": f"<{esc.link}|Open the conversation> · reply with "
                    f"`POST {esc.link}/reply`, hand back with `POST {esc.link}/release`",
                },
            }
        )
    blocks += [
        {
            "type": "context",
            "elements": [
                {
                    "type": "mrkdwn",
                    "text": clip_mrkdwn(
                        f"Session `{mrkdwn(esc.session_id)}` · "
                        f"escalation `{mrkdwn(esc.escalation_id)}` · "
                        f"{esc.created_at.isoformat(timespec='seconds')}",
                        SLACK_FIELD_TEXT_MAX,
                    ),
                }
            ],
        },
    ]
    return {
        "text": clip_mrkdwn(mrkdwn(summary(esc)), SLACK_FALLBACK_TEXT_MAX),
        "blocks": blocks,
        "unfurl_links": False,
        "unfurl_media": False,
    }


def _slack_captured(esc: Escalation) -> str:
    if not esc.fields:
        return "*Captured*\n_nothing yet_"
    lines = [
        f"• *{mrkdwn(one_line(key))}*: {mrkdwn(clip(one_line(value), LINE_MAX))}"
        for key, value in esc.fields.items()
    ]
    return clip_mrkdwn("*Captured*\n" + "\n".join(lines), SLACK_SECTION_TEXT_MAX)


def _slack_transcript(esc: Escalation) -> str:
    if not esc.transcript:
        return "*Conversation*\n_no messages_"
    quoted = [
        f">*{ROLE_LABELS[role]}:* {mrkdwn(clip(one_line(text), LINE_MAX))}"
        for role, text in esc.transcript
    ]
    # Keep the newest lines: walk back from the end while they fit.
    budget = SLACK_SECTION_TEXT_MAX - len("*Last 000 lines* (earlier lines left out)\n")
    kept: list[str] = []
    for line in reversed(quoted):
        if len(line) + 1 > budget:
            break
        kept.append(line)
        budget -= len(line) + 1
    kept.reverse()
    title = f"*Last {len(kept)} line{'s' if len(kept) != 1 else ''}*"
    if len(kept) < len(quoted):
        title += " (earlier lines left out)"
    return title + "\n" + "\n".join(kept)


class SlackNotifier(Notifier):
    """Post escalations to Slack incoming webhooks.

    ``http`` is owned by the caller (the gateway lifespan opens one); this
    class never opens or closes it. ``timeout_s`` bounds each POST (connect +
    send + answer), in seconds.
    """

    name = "slack"

    def __init__(self, http: httpx.AsyncClient, *, timeout_s: float = 10.0) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        self._http = http
        self._timeout_s = timeout_s
        # The POST bounds itself; the base's bound is a backstop (and the metrics).
        self.options = CallOptions(timeout_s=timeout_s + 5.0, max_attempts=1)

    async def _send_impl(self, webhook_url: str, esc: Escalation, /) -> None:
        """POST :func:`render_slack` of ``esc`` to ``webhook_url``; one attempt.

        Returns on any ``2xx`` (Slack's body is ``ok``). Raises
        :class:`DeliveryError` with ``tool="slack"``: retryable for ``408``,
        ``429``, ``5xx``, timeouts and connection errors (``retry_after_s`` set
        from ``Retry-After``); not retryable for other statuses, naming the
        status and Slack's error text (``404: no_service``), and for a missing
        or non-http(s) webhook URL.
        """
        where = _webhook_label(webhook_url)
        if not webhook_url.strip():
            raise DeliveryError(
                "slack",
                "no webhook URL (escalation.to_slack_webhook is empty; is its "
                "environment variable set?)",
                retryable=False,
            )
        if where is None:
            raise DeliveryError(
                "slack",
                "the webhook URL is not an http(s) URL; check escalation.to_slack_webhook",
                retryable=False,
            )
        what = f"escalation {esc.escalation_id} to {where}"
        try:
            response = await self._http.post(
                webhook_url, json=render_slack(esc), timeout=httpx.Timeout(self._timeout_s)
            )
        except httpx.TimeoutException as exc:
            raise DeliveryError(
                "slack",
                f"{what}: no answer within {self._timeout_s:g} s ({type(exc).__name__})",
                retryable=True,
            ) from exc
        except httpx.TransportError as exc:
            raise DeliveryError(
                "slack",
                f"{what}: cannot reach Slack ({type(exc).__name__}: "
                f"{_scrub(str(exc), webhook_url)})",
                retryable=True,
            ) from exc
        except httpx.InvalidURL as exc:
            raise DeliveryError(
                "slack",
                f"{what}: the webhook URL is malformed; check escalation.to_slack_webhook",
                retryable=False,
            ) from exc
        if response.is_success:
            log.info(
                "escalation %s delivered to slack (client=%s, channel=%s)",
                esc.escalation_id,
                esc.client_id,
                esc.channel,
            )
            return
        raise _slack_error(what, response, webhook_url)


_SLACK_HINTS: dict[str, str] = {
    "invalid_payload": "Slack rejected the message blocks (a rendering bug)",
    "invalid_token": "the webhook was revoked; create a new one",
    "no_service": "the webhook was removed or revoked; create a new one",
    "no_team": "the Slack workspace is gone; create a new webhook",
    "team_disabled": "the Slack workspace is disabled",
    "channel_not_found": "the webhook's channel no longer exists; create a new webhook",
    "channel_is_archived": "the webhook's channel is archived; unarchive it or create a new webhook",
    "action_prohibited": "a workspace admin restricts posting to that channel",
}


def _slack_error(what: str, response: httpx.Response, webhook_url: str) -> DeliveryError:
    status = response.status_code
    body = _scrub(clip(one_line(response.text), 200), webhook_url)
    reason = f"{what}: Slack answered HTTP {status}"
    if body:
        reason += f": {body}"
    hint = _SLACK_HINTS.get(body)
    retryable = status in (408, 429) or status >= 500
    if hint:
        reason += f" ({hint})"
    elif not retryable:
        reason += "; check escalation.to_slack_webhook"
    return DeliveryError(
        "slack",
        reason,
        retryable=retryable,
        retry_after_s=retry_after_s(response) if retryable else None,
        status=status,
    )


def _webhook_label(url: str) -> str | None:
    """``scheme://host/…``: the webhook's address without its secret path.

    ``None`` when ``url`` is not an http(s) URL with a host.
    """
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not host:
        return None
    return f"{parts.scheme}://{host}/…"


def _scrub(text: str, url: str) -> str:
    """``text`` with the webhook URL and its path (the secret) blanked out."""
    try:
        path = urlsplit(url).path
    except ValueError:
        path = ""
    for secret in (url, url.strip(), path):
        if len(secret) > 1:
            text = text.replace(secret, "…")
    return text
