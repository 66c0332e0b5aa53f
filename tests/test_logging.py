"""The gateway's log formatter: one record is one line, whatever an id holds."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from gateway.logging import OneLineFormatter, configure_logging, escape_controls


@pytest.fixture
def log() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(OneLineFormatter("%(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("test.gateway.logging")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield logger, stream
    finally:
        logger.removeHandler(handler)
        logger.propagate = True


def test_a_newline_in_an_argument_cannot_forge_a_log_line(
    log: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = log
    # the client id of /web/chat/x%0Afake%20log%20line, as the router decodes it
    logger.info("web chat refused: unknown client=%s", "x\nINFO gateway: fake log line")
    logger.info("next record")
    assert stream.getvalue().splitlines() == [
        "INFO test.gateway.logging: web chat refused: unknown client=x\\nINFO gateway: fake log line",
        "INFO test.gateway.logging: next record",
    ]


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [
        ("a\r\nb", "a\\r\\nb"),
        ("tab\there", "tab\\there"),
        ("\x1b[2Jansi", "\\x1b[2Jansi"),  # no terminal escape sequences either
        ("nul\x00del\x7f", "nul\\x00del\\x7f"),
        ("nel\x85c1\x9b", "nel\\x85c1\\x9b"),
        ("ls\u2028ps\u2029", "ls\\u2028ps\\u2029"),
        ("Łukasz 王伟 C:\\path é", "Łukasz 王伟 C:\\path é"),  # printable text is untouched
    ],
)
def test_control_characters_are_escaped(raw: str, escaped: str) -> None:
    assert escape_controls(raw) == escaped


def test_message_and_traceback_stay_on_one_line(log: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = log
    try:
        raise ValueError("bad id\nCRITICAL gateway: forged")
    except ValueError:
        logger.exception("turn failed for\rclient=%s", "a\x85b")
    (line,) = stream.getvalue().splitlines()
    assert line.startswith(
        "ERROR test.gateway.logging: turn failed for\\rclient=a\\x85b\\nTraceback"
    )
    assert "ValueError: bad id\\nCRITICAL gateway: forged" in line


def test_configure_logging_installs_the_one_line_formatter() -> None:
    root = logging.getLogger()
    before = list(root.handlers)
    level = root.level
    try:
        configure_logging("INFO")
        ours = [h for h in root.handlers if getattr(h, "_gateway", False)]
        assert len(ours) == 1 and isinstance(ours[0].formatter, OneLineFormatter)
    finally:
        for handler in root.handlers[:]:
            if handler not in before:
                root.removeHandler(handler)
        root.setLevel(level)


def test_http_client_request_urls_are_not_logged() -> None:
    """A Slack incoming webhook's URL is its secret: httpx's per-request INFO line
    (which prints it) is silenced by the gateway's logging setup."""
    configure_logging("DEBUG")
    assert not logging.getLogger("httpx").isEnabledFor(logging.INFO)
    assert logging.getLogger("httpx").isEnabledFor(logging.WARNING)
