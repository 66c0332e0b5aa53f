"""Twilio REST calls for a live phone call: transfer it to a human, or hang it up.

Both use Twilio's "Update a Call resource" endpoint (Twilio Voice API reference,
``/docs/voice/api/call-resource#update-a-call-resource``)::

    POST {base}/2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json
    Authorization: Basic base64(AccountSid:AuthToken)
    Content-Type: application/x-www-form-urlencoded

    Twiml=<Response><Dial>+14155550100</Dial></Response>     (transfer)
    Status=completed                                        (hang up)

Twilio answers ``200`` with the Call resource as JSON (``sid``, ``status``...),
or an error status with a JSON body ``{"code": 20404, "message": "...",
"more_info": "https://www.twilio.com/docs/errors/20404", "status": 404}``.

Errors are mapped into the engine's tree: every failure is a
:class:`TwilioCallError`, a :class:`engine.errors.ToolError` with
``tool="twilio"``, raised ``from`` the httpx exception underneath.
``retryable`` is true for ``429``, ``5xx`` and transport errors (connection
refused, timeouts), which are retried here first, a bounded number of times
with a short exponential backoff (``Retry-After`` is honoured up to the
backoff cap). Other ``4xx`` (bad credentials, a call that has already ended)
fail at once with ``retryable=False``.

A retry after a lost response may repeat an update Twilio already applied: for
a transfer that restarts the ``<Dial>`` (the caller hears ringing again),
which is better than dropping the transfer.

The :class:`httpx.AsyncClient` is owned by the caller (the gateway lifespan
opens one); this module never opens or closes it.
"""

from __future__ import annotations

import logging
import random
import re
from dataclasses import dataclass
from urllib.parse import quote

import httpx
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt
from twilio.twiml.voice_response import VoiceResponse

from engine.config import ClientConfig
from engine.errors import ToolError
from providers.http import retry_after_s

__all__ = ["DEFAULT_API_BASE_URL", "CallState", "TwilioCallError", "TwilioCalls"]

log = logging.getLogger("channels.phone.rest")

DEFAULT_API_BASE_URL = "https://api.twilio.com"
"""Twilio's REST API; ``TWILIO_BASE_URL`` overrides it (local stubs in tests)."""

_CALL_SID = re.compile(r"^CA[0-9a-fA-F]{32}$")
_E164 = re.compile(r"^\+[1-9][0-9]{1,14}$")


@dataclass(frozen=True)
class CallState:
    """What Twilio answered about the call after an update.

    ``status`` is Twilio's call status (``in-progress``, ``completed``...).
    """

    sid: str
    status: str


class TwilioCallError(ToolError):
    """A Twilio call update failed.

    ``http_status`` is the HTTP status (None for transport errors), ``code`` and
    ``more_info`` are Twilio's error code and documentation link when its error
    body carried them. ``retry_after_s`` is the ``Retry-After`` of a ``429``/``503``.
    """

    def __init__(
        self,
        reason: str,
        *,
        retryable: bool,
        http_status: int | None = None,
        code: int | None = None,
        more_info: str | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__("twilio", reason, retryable=retryable)
        self.http_status = http_status
        self.code = code
        self.more_info = more_info
        self.retry_after_s = retry_after_s


class TwilioCalls:
    """Update live calls of one Twilio account.

    ``base_url`` defaults to :data:`DEFAULT_API_BASE_URL`. ``attempts`` bounds
    the tries per update (1 = no retry); ``backoff_s`` is the first wait between
    tries, doubled each time up to ``max_backoff_s``; ``timeout_s`` bounds each
    HTTP request (connect + send + answer), all in seconds.
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        account_sid: str,
        auth_token: str,
        *,
        base_url: str | None = None,
        attempts: int = 3,
        backoff_s: float = 0.25,
        max_backoff_s: float = 2.0,
        timeout_s: float = 5.0,
    ) -> None:
        if not account_sid or not auth_token:
            raise ValueError("account_sid and auth_token are both required")
        if attempts < 1:
            raise ValueError(f"attempts must be at least 1, got {attempts}")
        self._http = http
        self._account_sid = account_sid
        self._auth = httpx.BasicAuth(account_sid, auth_token)
        self._base_url = (base_url or DEFAULT_API_BASE_URL).rstrip("/")
        self._attempts = attempts
        self._backoff_s = backoff_s
        self._max_backoff_s = max_backoff_s
        self._timeout = httpx.Timeout(timeout_s)

    @classmethod
    def for_client(
        cls, http: httpx.AsyncClient, client: ClientConfig, *, base_url: str | None = None
    ) -> TwilioCalls:
        """The client's ``channels.phone.twilio`` account.

        Raises :class:`TwilioCallError` (not retryable) when its account SID or
        auth token is unset (their ``${ENV_VAR}`` was not set at start-up).
        """
        creds = client.channels.phone.twilio
        if not creds.account_sid or not creds.auth_token:
            missing = "account_sid" if not creds.account_sid else "auth_token"
            raise TwilioCallError(
                f"client {client.client_id!r} has no channels.phone.twilio.{missing} "
                "(its environment variable is unset); set it to transfer or end calls",
                retryable=False,
            )
        return cls(http, creds.account_sid, creds.auth_token, base_url=base_url)

    async def transfer(self, call_sid: str, to_number: str) -> CallState:
        """Replace the call's TwiML with ``<Dial>to_number</Dial>``.

        ``to_number`` is E.164 (``+14155550100``). The media stream ends and
        Twilio dials the number, bridging the caller to it.
        """
        if not _E164.match(to_number):
            raise TwilioCallError(
                f"transfer of call {call_sid}: the number to dial is not E.164 "
                "(expected '+' and up to 15 digits); check escalation.phone_transfer_number",
                retryable=False,
            )
        twiml = VoiceResponse()
        twiml.dial(to_number)
        return await self._update("transfer", call_sid, {"Twiml": _xml(twiml)})

    async def hangup(self, call_sid: str) -> CallState:
        """End the call (``Status=completed``)."""
        return await self._update("hangup", call_sid, {"Status": "completed"})

    async def _update(self, action: str, call_sid: str, form: dict[str, str]) -> CallState:
        if not _CALL_SID.match(call_sid):
            raise TwilioCallError(
                f"{action}: {call_sid!r} is not a Twilio Call SID ('CA' + 32 hex digits)",
                retryable=False,
            )
        url = (
            f"{self._base_url}/2010-04-01/Accounts/{quote(self._account_sid, safe='')}"
            f"/Calls/{call_sid}.json"
        )
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._attempts),
            wait=self._wait,
            retry=retry_if_exception(lambda exc: isinstance(exc, ToolError) and exc.retryable),
            before_sleep=lambda state: _log_retry(action, call_sid, state, self._attempts),
            reraise=True,
        )
        return await retrying(self._send, action, call_sid, url, form)

    async def _send(self, action: str, call_sid: str, url: str, form: dict[str, str]) -> CallState:
        what = f"{action} of call {call_sid}"
        try:
            response = await self._http.post(
                url,
                data=form,
                auth=self._auth,
                headers={"Accept": "application/json"},
                timeout=self._timeout,
            )
        except httpx.TransportError as exc:
            raise TwilioCallError(
                f"{what} failed: cannot reach Twilio at {self._base_url} "
                f"({type(exc).__name__}: {exc})",
                retryable=True,
            ) from exc
        try:
            response.raise_for_status()
        except httpx.HTTPStatusError as exc:
            raise _error_from_response(what, response) from exc
        try:
            body = response.json()
            return CallState(sid=str(body["sid"]), status=str(body["status"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise TwilioCallError(
                f"{what}: Twilio answered HTTP {response.status_code} without a Call "
                "resource (JSON with 'sid' and 'status'); the update may have been applied",
                retryable=False,
                http_status=response.status_code,
            ) from exc

    def _wait(self, state: RetryCallState) -> float:
        """Seconds before the next try: exponential with jitter, or ``Retry-After``."""
        backoff = min(self._backoff_s * 2.0 ** (state.attempt_number - 1), self._max_backoff_s)
        backoff *= random.uniform(0.8, 1.2)  # spread replicas retrying the same outage
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, TwilioCallError) and exc.retry_after_s is not None:
            return min(max(exc.retry_after_s, backoff), self._max_backoff_s)
        return min(backoff, self._max_backoff_s)


def _xml(twiml: VoiceResponse) -> str:
    return str(twiml.to_xml(xml_declaration=False))


def _log_retry(action: str, call_sid: str, state: RetryCallState, attempts: int) -> None:
    exc = state.outcome.exception() if state.outcome is not None else None
    status = getattr(exc, "http_status", None)
    log.warning(
        "twilio %s call=%s failed (%s), try %d/%d; retrying in %.2f s",
        action,
        call_sid,
        f"HTTP {status}" if status else type(exc.__cause__ or exc).__name__ if exc else "?",
        state.attempt_number,
        attempts,
        state.upcoming_sleep,
    )


def _error_from_response(what: str, response: httpx.Response) -> TwilioCallError:
    """Map a Twilio error answer (JSON ``code``/``message``/``more_info``) to the error tree."""
    status = response.status_code
    code: int | None = None
    message: str | None = None
    more_info: str | None = None
    try:
        body = response.json()
    except ValueError:  # not JSON (a proxy's HTML page, an empty body)
        body = None
    if isinstance(body, dict):
        raw_code = body.get("code")
        code = raw_code if isinstance(raw_code, int) else None
        message = str(body["message"]) if body.get("message") else None
        more_info = str(body["more_info"]) if body.get("more_info") else None
    reason = f"{what} failed: HTTP {status}"
    if code is not None or message:
        reason += f", Twilio error {code if code is not None else '?'}: {message or 'no message'}"
    elif response.text:
        reason += f": {response.text[:200]}"
    if more_info:
        reason += f" (see {more_info})"
    if status == 401:
        reason += "; check channels.phone.twilio.account_sid / auth_token"
    elif status == 404:
        reason += "; the call may have ended already, or belongs to another account"
    retryable = status == 429 or status >= 500
    return TwilioCallError(
        reason,
        retryable=retryable,
        http_status=status,
        code=code,
        more_info=more_info,
        retry_after_s=retry_after_s(response) if retryable else None,
    )
