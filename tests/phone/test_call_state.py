"""The call's state table (channels/phone/state.py): the named transitions of a
call, events a state has no row for, and the end states."""

from __future__ import annotations

import pytest

from channels.phone.state import CallEvent, CallState, CallStatus

E, S = CallEvent, CallState


def run(*events: CallEvent) -> CallStatus:
    status = CallStatus("CA-test")
    for event in events:
        status.on(event)
    return status


def test_a_turn_goes_listening_speaking_thinking_answering_and_back() -> None:
    status = CallStatus()
    assert status.state is S.CONNECTING
    seen = [
        status.on(event)
        for event in (E.STARTED, E.CALLER_STARTED, E.ASKED, E.AUDIO_OUT, E.REPLY_OVER)
    ]
    assert seen == [S.LISTENING, S.USER_SPEAKING, S.THINKING, S.BOT_SPEAKING, S.LISTENING]


def test_barge_in_and_backchannel() -> None:
    status = run(E.STARTED, E.CALLER_STARTED, E.ASKED, E.AUDIO_OUT)
    assert status.on(E.CALLER_STARTED) is S.USER_SPEAKING  # barge-in onset
    assert status.on(E.RESUMED) is S.THINKING  # only "mm-hm": the reply goes on
    assert status.on(E.CALLER_STARTED) is S.USER_SPEAKING
    assert status.on(E.CALLER_DONE) is S.LISTENING  # noise: nothing to answer


def test_events_without_a_row_leave_the_state_alone() -> None:
    status = run(E.STARTED, E.CALLER_STARTED)
    assert status.on(E.AUDIO_OUT) is S.USER_SPEAKING  # our audio while the caller talks
    assert run().on(E.ASKED) is S.CONNECTING  # nothing before Twilio's start


@pytest.mark.parametrize("event, after", [(E.TRANSFER, S.TRANSFERRING), (E.HANG_UP, S.HANGING_UP)])
def test_call_actions_apply_from_every_live_state(event: CallEvent, after: CallState) -> None:
    for prefix in ((E.STARTED,), (E.STARTED, E.CALLER_STARTED), (E.STARTED, E.ASKED)):
        status = run(*prefix)
        assert status.on(event) is after
        assert not status.closing
        # Twilio acts on it by ending the stream; floor events are ignored meanwhile
        assert status.on(E.CALLER_STARTED) is after


def test_goodbye_closes_to_new_turns_and_closed_is_final() -> None:
    status = run(E.STARTED, E.CALLER_STARTED, E.GOODBYE)
    assert status.state is S.ENDING and status.closing
    assert status.on(E.CALLER_STARTED) is S.ENDING
    assert status.on(E.CLOSED) is S.ENDED and status.closing
    for event in CallEvent:
        assert status.on(event) is S.ENDED
