"""The state table: the one source of the moves a workset may make."""

from __future__ import annotations

from .errors import TransitionRefused
from .models import State

TRANSITIONS: dict[State, frozenset[State]] = {
    State.READY: frozenset({State.LOCKED, State.CANCELED, State.IGNORED}),
    State.LOCKED: frozenset({State.IN_PROGRESS, State.ERROR, State.READY, State.CANCELED}),
    State.IN_PROGRESS: frozenset({State.COMPLETE, State.ERROR, State.CANCELED}),
    State.COMPLETE: frozenset({State.ARCHIVED}),
    State.ERROR: frozenset({State.READY, State.IGNORED, State.ARCHIVED}),
    State.CANCELED: frozenset({State.ARCHIVED, State.READY}),
    State.IGNORED: frozenset({State.READY, State.ARCHIVED}),
    State.ARCHIVED: frozenset({State.READY}),
}

TERMINAL_FOR_AN_ATTEMPT = frozenset({State.COMPLETE, State.ERROR, State.CANCELED})
"""States in which no agent holds the workset any more."""


def allowed_next(state: State) -> frozenset[State]:
    return TRANSITIONS[state]


def check_transition(workset_id: str, from_state: State, to_state: State) -> None:
    """Raise `TransitionRefused` unless the state table allows `from_state` -> `to_state`."""
    if to_state in TRANSITIONS[from_state]:
        return

    allowed = ", ".join(sorted(TRANSITIONS[from_state])) or "nothing"
    rule = f"from {from_state} a workset may go to {allowed}"
    raise TransitionRefused(workset_id, from_state, to_state, rule)
