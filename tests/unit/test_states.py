"""The state table: every (from, to) pair of states is allowed exactly when DESIGN.md's "States" table says so."""

from __future__ import annotations

import re

import pytest

from workset_monitor.errors import TransitionRefused
from workset_monitor.models import State
from workset_monitor.states import allowed_next, check_transition

# Written from DESIGN.md ("States", column "next states"), independently of workset_monitor.states.TRANSITIONS.
EXPECTED_NEXT: dict[str, set[str]] = {
    "ready": {"locked", "canceled", "ignored"},
    "locked": {"in_progress", "error", "ready", "canceled"},
    "in_progress": {"complete", "error", "canceled"},
    "complete": {"archived"},
    "error": {"ready", "ignored", "archived"},
    "canceled": {"archived", "ready"},
    "ignored": {"ready", "archived"},
    "archived": {"ready"},
}

STATE_NAMES = {state.value for state in State}
PAIRS = [(from_state, to_state) for from_state in State for to_state in State]
ALLOWED = [(a, b) for a, b in PAIRS if b.value in EXPECTED_NEXT[a.value]]
REFUSED = [(a, b) for a, b in PAIRS if b.value not in EXPECTED_NEXT[a.value]]


def _pair_id(pair: tuple[State, State]) -> str:
    return f"{pair[0]}->{pair[1]}"


def test_the_expected_table_names_every_state_and_only_states():
    assert set(EXPECTED_NEXT) == STATE_NAMES
    assert set().union(*EXPECTED_NEXT.values()) <= STATE_NAMES
    assert len(ALLOWED) + len(REFUSED) == len(State) ** 2


@pytest.mark.parametrize("state", list(State), ids=str)
def test_allowed_next_is_the_design_row(state):
    assert {s.value for s in allowed_next(state)} == EXPECTED_NEXT[state.value]


@pytest.mark.parametrize(("from_state", "to_state"), ALLOWED, ids=[_pair_id(p) for p in ALLOWED])
def test_allowed_move_passes(from_state, to_state):
    assert check_transition("ws-1", from_state, to_state) is None


@pytest.mark.parametrize(("from_state", "to_state"), REFUSED, ids=[_pair_id(p) for p in REFUSED])
def test_refused_move_raises_with_a_rule_naming_the_allowed_next_states(from_state, to_state):
    with pytest.raises(TransitionRefused) as caught:
        check_transition("ws-1", from_state, to_state)

    refused = caught.value
    assert (refused.workset_id, refused.from_state, refused.to_state) == ("ws-1", from_state, to_state)
    # The rule names the state it starts from and every allowed next state, and no other state (not the target).
    mentioned = set(re.findall(r"[a-z_]+", refused.rule)) & STATE_NAMES
    assert mentioned == EXPECTED_NEXT[from_state.value] | {from_state.value}


def test_no_state_may_move_to_itself():
    for state in State:
        with pytest.raises(TransitionRefused):
            check_transition("ws-1", state, state)


def test_complete_to_ready_is_refused_and_says_only_archived_is_allowed():
    with pytest.raises(TransitionRefused) as caught:
        check_transition("GIAB trio", State.COMPLETE, State.READY)

    assert caught.value.rule == "from complete a workset may go to archived"
    assert "'GIAB trio'" in str(caught.value)
    assert "complete -> ready refused" in str(caught.value)


def test_archived_to_ready_is_allowed_as_a_restore():
    check_transition("ws-1", State.ARCHIVED, State.READY)

    assert allowed_next(State.ARCHIVED) == frozenset({State.READY})
