"""The lifecycle under contention, against the emulator in server mode (each request on its own server thread).

These tests mean something only because the emulator keeps DynamoDB's promise that each operation is atomic; its own
test (`test_local_stack.py`) shows that it does, and that the same race without its lock has several winners.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Callable

import pytest

from local.emulator import Emulator
from tests.integration.conftest import store_for
from workset_monitor.errors import ConcurrentUpdate, LeaseLost, TransitionRefused
from workset_monitor.models import State, Workset, utcnow
from workset_monitor.states import TRANSITIONS
from workset_monitor.store import WorksetStore

pytestmark = pytest.mark.integration

THREADS = 32


def new_workset(workset_id: str) -> Workset:
    now = utcnow()
    return Workset(
        workset_id=workset_id,
        bucket="bucket",
        folder=f"daylily_monitoring/active_worksets/{workset_id}/",
        state=State.READY,
        created_at=now,
        updated_at=now,
    )


def run_together(count: int, work: Callable[[int], None]) -> None:
    threads = [threading.Thread(target=work, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def race_to_claim(stores: list[WorksetStore], ready: Workset) -> list[str]:
    """Every store claims `ready` (the version they all read) at the same moment; return who won."""
    barrier = threading.Barrier(len(stores))
    winners: list[str] = []
    unexpected: list[Exception] = []

    def claim(n: int) -> None:
        barrier.wait()
        try:
            stores[n].claim(ready, owner=f"agent-{n}", cluster="c1", lease_seconds=600)
            winners.append(f"agent-{n}")
        except (ConcurrentUpdate, TransitionRefused):
            pass
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            unexpected.append(exc)

    run_together(len(stores), claim)
    assert unexpected == []
    return winners


def test_32_agents_racing_to_claim_one_workset_have_one_winner_in_each_of_100_rounds(
    emulator: Emulator, table: str
) -> None:
    stores = [store_for(emulator, table) for _ in range(THREADS)]
    winners_per_round: list[int] = []

    for round_number in range(100):
        workset_id = f"claim-{round_number}"
        ready = stores[0].register(new_workset(workset_id), actor="test")

        winners = race_to_claim(stores, ready)

        winners_per_round.append(len(winners))
        claimed = stores[0].get(workset_id)
        assert claimed.lease is not None and [claimed.lease.owner] == winners
        assert [entry.to_state for entry in stores[0].full_history(workset_id)] == [State.READY, State.LOCKED]

    assert winners_per_round == [1] * 100


def test_writers_racing_on_transitions_lose_no_update_and_make_no_illegal_move(emulator: Emulator, table: str) -> None:
    # GIVEN 8 writers that each read the workset and try a random move the state table allows, 40 times each
    stores = [store_for(emulator, table) for _ in range(8)]
    stores[0].register(new_workset("contended"), actor="test")
    successes = Counter[str]()
    lock = threading.Lock()

    def write(n: int) -> None:
        chooser = random.Random(n)
        for _ in range(40):
            current = stores[n].get("contended")
            to_state = chooser.choice(sorted(TRANSITIONS[current.state]))
            try:
                stores[n].transition(current, to_state, actor=f"writer-{n}", reason="race")
            except (ConcurrentUpdate, LeaseLost):
                continue
            with lock:
                successes[f"writer-{n}"] += 1

    # WHEN they all run at once
    run_together(len(stores), write)

    # THEN every successful write is in the history, in one unbroken chain of allowed moves, versions never repeated
    history = stores[0].full_history("contended")
    moves = history[1:]
    assert len(moves) == sum(successes.values())
    assert len(moves) >= 40  # the race let a good share through
    for before, after in zip(history, moves, strict=False):
        assert after.from_state == before.to_state
        assert after.to_state in TRANSITIONS[before.to_state]
    versions = [entry.version for entry in history]
    assert versions == sorted(set(versions))
    final = stores[0].get("contended")
    assert (final.state, final.version) == (history[-1].to_state, history[-1].version)
