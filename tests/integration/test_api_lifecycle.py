"""The three ways back to `ready` (retry, restore, giving a lease back), each with its own rule, and registering a
cluster again, through the API functions against the emulator."""

from __future__ import annotations

from typing import Any

import boto3
import pytest

from local.template import Template
from tests.integration.test_api_function import registered
from tests.integration.test_api_routes import EXAMPLES, PREFIX, put_folder
from workset_monitor.models import State
from workset_monitor.store import WorksetStore

pytestmark = pytest.mark.integration


@pytest.fixture
def bucket(deployed: Template) -> str:
    return deployed.physical("WorksetBucket").ref


def broken_workset(api: Any, bucket: str, name: str = "broken") -> dict[str, Any]:
    """A folder that fails validation, registered through the API: in `error`, without a work spec."""
    _, body = api(
        "POST", "/worksets", body={"bucket": bucket, "prefix": put_folder(bucket, "broken-sheet-example", name)}
    )
    assert (body["state"], body.get("work")) == ("error", None)
    return body


def fix_folder(bucket: str, name: str) -> None:
    """Put the missing info file and a valid work file and sheet into the broken folder."""
    valid = EXAMPLES / "hg002-giab-wgs-30x"
    s3 = boto3.client("s3")
    for file_name in ("daylily_info.yaml", "daylily_work.yaml", "stage_samples.tsv"):
        s3.upload_file(str(valid / file_name), bucket, f"{PREFIX}{name}/{file_name}")
    for path in (valid / "sample_data").iterdir():
        s3.upload_file(str(path), bucket, f"{PREFIX}{name}/sample_data/{path.name}")


# --- retry ----------------------------------------------------------------------------------------------------------


def test_a_retry_of_a_folder_still_invalid_is_422_with_every_reason_and_recorded(
    api: Any, bucket: str, store: WorksetStore
) -> None:
    # GIVEN a workset that failed validation
    broken = broken_workset(api, bucket)

    # WHEN a person asks for a retry without fixing the folder
    status, body = api("POST", "/worksets/broken/retry", body={"actor": "alice", "reason": "try again"})

    # THEN it is refused with every reason, and stays in error in the same attempt
    assert (status, body["error"]["code"]) == (422, "not_a_workset_folder")
    for reason in broken["error_reasons"]:
        assert reason in body["error"]["message"]
    workset = store.get("broken")
    assert (workset.state, workset.attempt, workset.work) == (State.ERROR, 1, None)
    # AND the history records the revalidation with today's reasons
    entry = store.full_history("broken")[-1]
    assert (entry.event, entry.actor, entry.to_state) == ("revalidated", "alice", State.ERROR)
    assert entry.reason.startswith("try again; folder still invalid: ")
    assert "daylily_info.yaml is missing" in entry.reason


def test_a_retry_of_a_folder_fixed_since_runs_it_with_the_work_it_holds_now(api: Any, bucket: str) -> None:
    broken_workset(api, bucket)
    fix_folder(bucket, "broken")

    status, body = api("POST", "/worksets/broken/retry", body={"actor": "alice", "reason": "sheet fixed"})

    assert (status, body["state"], body["attempt"], body["priority"]) == (200, "ready", 2, "urgent")
    assert body["work"]["run_command"]
    assert not body.get("error_reasons") and "error_category" not in body


def test_a_retry_runs_the_work_the_folder_holds_now(api: Any, bucket: str, store: WorksetStore) -> None:
    # GIVEN a canceled workset whose folder is valid, with an older work spec recorded
    put_folder(bucket, "hg002-giab-wgs-30x", "w1")
    registered(store, "w1", state=State.CANCELED, work={"run_command": "-p old"})

    status, body = api("POST", "/worksets/w1/retry")

    assert (status, body["state"], body["attempt"]) == (200, "ready", 2)
    assert body["work"]["run_command"] != "-p old"


def test_a_retry_of_an_ignored_workset_with_a_broken_sheet_is_refused(
    api: Any, bucket: str, store: WorksetStore
) -> None:
    # GIVEN a workset ignored with a valid work file but a broken sample sheet (never validated as ready)
    put_folder(bucket, "broken-sheet-example", "ign")
    registered(store, "ign", state=State.IGNORED, work={"run_command": "-p help"})

    status, body = api("POST", "/worksets/ign/retry")

    assert (status, body["error"]["code"]) == (422, "not_a_workset_folder")
    assert store.get("ign").state is State.IGNORED


def test_a_retry_of_a_workset_whose_folder_is_gone_is_404(api: Any, store: WorksetStore) -> None:
    registered(store, "w1", state=State.CANCELED, work={"run_command": "-p help"})

    status, body = api("POST", "/worksets/w1/retry")

    assert (status, body["error"]["code"]) == (404, "not_found")
    assert "holds no objects" in body["error"]["message"]


@pytest.mark.parametrize("state", [State.READY, State.ARCHIVED])
def test_a_retry_is_only_for_failed_canceled_or_ignored_worksets(api: Any, store: WorksetStore, state: State) -> None:
    registered(store, "w1", state=state, work={"run_command": "-p help"})

    status, body = api("POST", "/worksets/w1/retry")

    assert (status, body["error"]["code"]) == (409, "transition_refused")
    assert "a retry applies to a workset that is canceled or error or ignored" in body["error"]["message"]


# --- restore --------------------------------------------------------------------------------------------------------


def test_a_restore_of_an_archived_invalid_folder_is_validated_again(api: Any, bucket: str, store: WorksetStore) -> None:
    # GIVEN a workset that failed validation, then was archived
    broken_workset(api, bucket)
    api("POST", "/worksets/broken/archive")

    # WHEN it is restored without fixing its folder
    status, body = api("POST", "/worksets/broken/restore", body={"reason": "run it again"})

    # THEN it is refused with the reasons, stays archived, and the history says it was validated again
    assert (status, body["error"]["code"]) == (422, "not_a_workset_folder")
    assert "daylily_info.yaml is missing" in body["error"]["message"]
    assert store.get("broken").state is State.ARCHIVED
    assert store.full_history("broken")[-1].event == "revalidated"

    # AND once the folder is fixed, a restore runs it as a new attempt
    fix_folder(bucket, "broken")
    status, body = api("POST", "/worksets/broken/restore")
    assert (status, body["state"], body["attempt"]) == (200, "ready", 2)


def test_a_restore_is_only_for_archived_worksets(api: Any, bucket: str) -> None:
    broken_workset(api, bucket)

    status, body = api("POST", "/worksets/broken/restore")

    assert (status, body["error"]["code"]) == (409, "transition_refused")


# --- giving a lease back --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("token", [1, 12345])
def test_giving_back_a_lease_of_a_failed_workset_is_refused_never_a_retry(
    api: Any, bucket: str, store: WorksetStore, token: int
) -> None:
    broken_workset(api, bucket)

    status, body = api("DELETE", "/worksets/broken/lock", body={"lease_token": token})

    assert (status, body["error"]["code"]) == (409, "transition_refused")
    assert "only while the workset is locked" in body["error"]["message"]
    assert (store.get("broken").state, store.get("broken").attempt) == (State.ERROR, 1)


def test_giving_back_a_lease_of_a_ready_workset_is_refused(api: Any, store: WorksetStore) -> None:
    registered(store, "w1")

    status, body = api("DELETE", "/worksets/w1/lock", body={"lease_token": 1})

    assert (status, body["error"]["code"]) == (409, "transition_refused")


def test_no_state_change_leads_back_to_ready(api: Any, bucket: str, store: WorksetStore) -> None:
    # GIVEN a workset that failed validation
    broken_workset(api, bucket)

    # WHEN someone asks for `ready` through the generic state change
    status, body = api("PUT", "/worksets/broken/state", body={"state": "ready"})

    # THEN it is refused, pointing at the operations that do
    assert (status, body["error"]["code"]) == (409, "transition_refused")
    assert "POST /worksets/{id}/retry" in body["error"]["message"]
    assert store.get("broken").state is State.ERROR


# --- registering a cluster again ------------------------------------------------------------------------------------


def test_registering_a_cluster_again_keeps_the_fields_left_out(api: Any) -> None:
    # GIVEN a cluster registered with its zone and capacity
    api(
        "POST",
        "/clusters",
        body={"name": "c1", "region": "us-west-2", "availability_zone": "us-west-2b", "max_worksets": 4, "vcpus": 64},
    )

    # WHEN it is registered again with only some fields
    status, body = api("POST", "/clusters", body={"name": "c1", "cost_per_vcpu_hour": 0.03})

    # THEN those change and the others keep their values
    assert status == 200
    assert (body["region"], body["availability_zone"], body["max_worksets"], body["vcpus"]) == (
        "us-west-2",
        "us-west-2b",
        4,
        64,
    )
    assert body["cost_per_vcpu_hour"] == 0.03


def test_a_null_field_goes_back_to_its_default(api: Any) -> None:
    api("POST", "/clusters", body={"name": "c1", "availability_zone": "us-east-1a", "max_worksets": 4})

    _, body = api("POST", "/clusters", body={"name": "c1", "availability_zone": None, "max_worksets": None})

    assert "availability_zone" not in body
    assert body["max_worksets"] == 1
    assert api("GET", "/clusters/c1")[1] == body


def test_a_new_cluster_without_a_region_is_in_the_apis_own_region(api: Any, region: str) -> None:
    _, body = api("POST", "/clusters", body={"name": "c1"})

    assert (body["region"], body["max_worksets"], body["vcpus"], body["status"]) == (region, 1, 0, "active")


def test_registering_a_draining_or_retired_cluster_again_makes_it_active(api: Any) -> None:
    api("POST", "/clusters", body={"name": "c1"})
    api("POST", "/clusters/c1/heartbeat", body={"status": "draining"})
    api("POST", "/clusters", body={"name": "c2"})
    api("DELETE", "/clusters/c2")

    assert api("POST", "/clusters", body={"name": "c1"})[1]["status"] == "active"
    assert api("POST", "/clusters", body={"name": "c2"})[1]["status"] == "active"


def test_a_heartbeat_without_a_status_keeps_the_one_an_operator_set(api: Any) -> None:
    # GIVEN a cluster an operator set draining
    _, registered_cluster = api("POST", "/clusters", body={"name": "c1", "availability_zone": "us-east-1a"})
    api("POST", "/clusters/c1/heartbeat", body={"status": "draining"})

    # WHEN its agent heartbeats without a status, with or without a body
    empty = api("POST", "/clusters/c1/heartbeat")
    bare = api("POST", "/clusters/c1/heartbeat", body={})

    # THEN it stays draining, and the answer says so, so the agent can see it
    for status, body in (empty, bare):
        assert (status, body["status"], body["availability_zone"]) == (200, "draining", "us-east-1a")
        assert body["registered_at"] == registered_cluster["registered_at"]
