"""The web dashboard in a real browser: Debian's headless Chromium, driven by Playwright, on the local stack.

The stack runs as `make local` runs it. As in `make demo`, the demo's workset is dropped into S3 and an agent runs it
to `complete`; beside it wait a broken folder, a workset whose id, cluster name, actor and reason are markup, a
workset with a long history and one with a 300-character id. The browser signs in as a person would, finds the demo
workset, opens its history and checks the timeline, the queue counts, the priorities and the clusters against what
the API answers, checks that every data call it made was signed (and is refused unsigned), and saves screenshots to
`test-artifacts/`. Other tests check which cluster a workset shows, that the filters never ask for what the API
refuses, that a refused worksets query stops only the worksets panel, and how long ids are shortened.

Chromium comes from Debian (`make browser`): Playwright's own browser download cannot work without the internet.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from playwright.sync_api import ConsoleMessage, Dialog, Page, Playwright, Request, Route, expect, sync_playwright

from agent.client import ApiClient
from local.demo import (
    CLUSTER,
    EXAMPLES,
    INVALID,
    ROOT,
    VALID,
    Stack,
    find,
    finished,
    local_stack,
    start_agent,
    upload_workset,
    wait_for,
)
from workset_cli.dashboard import ViewerCredentials, dashboard_url

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    # NOTE: without these, Chromium's own connections (updates, sync) are refused by the closed network, noisily.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = ROOT / "test-artifacts"
WAIT_MS = 15_000
"""How long an expectation waits for the page to show something: more than one refresh (10 s by default)."""

HOSTILE_ID = '<img src=x onerror="window.pwned=1"> & <b>bold'
HOSTILE_CLUSTER = "<script>window.pwned=2</script>"
HOSTILE_ACTOR = "<img src=y onerror=window.pwned=3>"
HOSTILE_REASON = "</td></tr></table><script>window.pwned=4</script>"
LONG_HISTORY = "hg003 many attempts"
CANCELS = 60
"""Cancels and retries of LONG_HISTORY: 121 history entries, more than the 100 GET /worksets/{id} gives."""
NO_SUCH_CLUSTER = "no-such-cluster"
LONG_ID = ("hg004-" + "giab-wgs-30x-trio-resequenced-" * 10)[:300]
"""A 300-character workset id: one line in the table and the decisions, whole in the history."""
CLUSTER_STATES = ("ready", "locked", "in_progress")
"""The states a cluster holds a workset in: the only ones GET /worksets takes with `cluster`."""
UPDATED = re.compile(r"^updated \d\d:\d\d:\d\d$")
"""What the top bar says once the page has read the API."""


@dataclass
class Seen:
    """What a page did: its console errors and uncaught exceptions, the dialogs it opened, the requests it sent."""

    errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)

    def data_calls(self, api_url: str) -> list[Request]:
        """The requests to the API that are not for the dashboard's own files."""
        shell = urlsplit(api_url).path + "/dashboard"
        return [
            request
            for request in self.requests
            if request.url.startswith(api_url) and not urlsplit(request.url).path.startswith(shell)
        ]


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with local_stack("dashboard", schedule_seconds=0.5, parameters={"RetryBaseSeconds": "1"}) as running:
        yield running


@pytest.fixture(scope="module")
def api(stack: Stack) -> ApiClient:
    return stack.api(retries=0)


def waiting_folder(into: Path, name: str, cluster_name: str) -> Path:
    """A copy of an example folder whose work file asks for a cluster that is never registered: it waits, and each
    scheduler tick says why."""
    folder = into / name.replace("/", "_")
    shutil.copytree(EXAMPLES / "hg003-wes-normal", folder)
    with (folder / "daylily_work.yaml").open("a", encoding="utf-8") as work:
        work.write(f"cluster_name: {json.dumps(cluster_name)}\n")
    return folder


@pytest.fixture(scope="module")
def worksets(stack: Stack, api: ApiClient, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The demo's workset run to `complete` by an agent that stays up (so its cluster is live), the broken folder,
    the hostile workset, the long-history one and the long-id one, the last three waiting for their cluster."""
    s3 = stack.client("s3")
    folders = tmp_path_factory.mktemp("folders")
    upload_workset(s3, stack.bucket, stack.prefix, EXAMPLES / VALID)
    upload_workset(s3, stack.bucket, stack.prefix, EXAMPLES / INVALID)
    upload_workset(s3, stack.bucket, stack.prefix, waiting_folder(folders, "hostile", HOSTILE_CLUSTER), HOSTILE_ID)
    upload_workset(s3, stack.bucket, stack.prefix, waiting_folder(folders, "long", NO_SUCH_CLUSTER), LONG_HISTORY)
    upload_workset(s3, stack.bucket, stack.prefix, waiting_folder(folders, "long-id", NO_SUCH_CLUSTER), LONG_ID)

    for name in (VALID, INVALID, HOSTILE_ID, LONG_HISTORY, LONG_ID):
        wait_for(partial(find, api, name), f"{name} to be registered", seconds=20)

    agent = start_agent(stack, exit_when_idle=None)
    try:
        completed = wait_for(partial(finished, api, VALID), "the demo workset to complete", seconds=60)

        api.act(HOSTILE_ID, "cancel", actor=HOSTILE_ACTOR, reason=HOSTILE_REASON)
        api.act(HOSTILE_ID, "retry", actor=HOSTILE_ACTOR, reason=HOSTILE_REASON)
        for _ in range(CANCELS):
            api.act(LONG_HISTORY, "cancel", actor="e2e", reason="make its history long")
            api.act(LONG_HISTORY, "retry", actor="e2e", reason="make its history long")
        yield {VALID: completed}
    finally:
        agent.kill()
        agent.communicate()


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `make browser` installs Debian's chromium")
    with sync_playwright() as running:
        yield running


@pytest.fixture
def page(playwright: Playwright) -> Iterator[tuple[Page, Seen]]:
    """A fresh Chromium (its own user data folder) with one tab, and what that tab does."""
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        browser = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1440, "height": 1000},
        )
        try:
            tab = browser.new_page()
            seen = Seen()
            tab.on("console", lambda message: _console(seen, message))
            tab.on("pageerror", lambda error: seen.errors.append(f"uncaught: {error}"))
            tab.on("dialog", lambda dialog: _dialog(seen, dialog))
            tab.on("request", lambda request: seen.requests.append(request))
            yield tab, seen
        finally:
            browser.close()


def _console(seen: Seen, message: ConsoleMessage) -> None:
    if message.type == "error":
        seen.errors.append(message.text)


def _dialog(seen: Seen, dialog: Dialog) -> None:
    seen.dialogs.append(dialog.message)
    dialog.dismiss()


def sign_in(page: Page, stack: Stack, *, secret: str = "testing") -> None:
    """Open the dashboard and sign in with the form, as a person with the local stack's keys would."""
    page.goto(f"{stack.api_url}/dashboard")
    expect(page.locator("#sign-in")).to_be_visible(timeout=WAIT_MS)
    expect(page.locator("input[name=region]")).to_have_value(stack.region)
    page.fill("input[name=access_key_id]", "testing")
    page.fill("input[name=secret_access_key]", secret)
    page.get_by_role("button", name="Sign in").click()


def workset_button(page: Page, workset_id: str) -> Any:
    return page.locator("#worksets button.link").filter(has_text=workset_id)


def timeline_changes(page: Page) -> list[str]:
    """Each timeline entry's change, as the page words it: `registered ready`, `ready → locked`, ..."""
    return [" ".join(text.split()) for text in page.locator("#detail-body .entry .change").all_inner_texts()]


def test_the_dashboard_shows_the_demo_workset_its_history_the_queue_and_the_clusters(
    page: tuple[Page, Seen], stack: Stack, api: ApiClient, worksets: dict[str, Any]
) -> None:
    tab, seen = page

    # GIVEN the demo workset ran to complete; WHEN a person signs in to the dashboard
    sign_in(tab, stack)

    # THEN the table lists the demo workset, complete
    row = tab.locator(f'#worksets tr[data-workset="{VALID}"]')
    expect(row).to_contain_text("complete", timeout=WAIT_MS)

    # AND the states strip, the priorities and the clusters say what the API says
    queue = api.queue_stats()
    for state, number in queue["by_state"].items():
        expect(tab.locator(f'#states [data-state="{state}"] .state-count')).to_have_text(str(number), timeout=WAIT_MS)
    expect(tab.locator('#states [data-state="total"] .state-count')).to_have_text(str(sum(queue["by_state"].values())))
    for priority, number in queue["ready_by_priority"].items():
        expect(tab.locator(f'#priorities [data-priority="{priority}"] .bar-words')).to_have_text(str(number))
    for cluster in api.scheduler_stats()["clusters"]:
        cluster_row = tab.locator(f'#clusters tr[data-cluster="{cluster["name"]}"]')
        expect(cluster_row).to_contain_text(f"{cluster['active_worksets']} / {cluster['max_worksets']}")
        expect(cluster_row.locator(".badge")).to_have_text("live" if cluster["live"] else cluster["status"])
    expect(tab.locator(f'#clusters tr[data-cluster="{CLUSTER}"] .badge')).to_have_text("live")

    # WHEN the person opens the demo workset's history
    workset_button(tab, VALID).click()

    # THEN its timeline shows each change up to complete, by whom and why, as the API has it
    expect(tab.locator("#detail-body .detail-id")).to_have_text(VALID, timeout=WAIT_MS)
    expect(tab.locator("#detail-body .entry")).to_have_count(5)
    assert timeline_changes(tab) == [
        "registered ready",
        "assigned ready",
        "ready → locked",
        "locked → in progress",
        "in progress → complete",
    ]
    history = worksets[VALID]["history"]
    assert tab.locator("#detail-body .entry .actor").all_inner_texts() == [entry["actor"] for entry in history]
    assert tab.locator("#detail-body .entry .reason").all_inner_texts() == [entry["reason"] for entry in history]
    expect(tab.locator("#detail-body .facts")).to_contain_text(f"{CLUSTER}")

    # AND the scheduler's recent decisions say why the others wait
    expect(tab.locator("#decisions")).to_contain_text(
        f"waits: its work file asks for cluster {NO_SUCH_CLUSTER}, which is not registered"
    )
    expect(tab.locator("#updated")).to_have_text(UPDATED)
    ARTIFACTS.mkdir(exist_ok=True)
    tab.screenshot(path=ARTIFACTS / "dashboard.png", full_page=True)

    # AND every data call the page made was signed, answered, and is refused without its signature
    calls = seen.data_calls(stack.api_url)
    assert {urlsplit(call.url).path for call in calls} >= {
        "/queue/stats",
        "/scheduler/stats",
        "/clusters",
        "/worksets",
        f"/worksets/{VALID}",
    }
    for call in calls:
        assert call.all_headers()["authorization"].startswith("AWS4-HMAC-SHA256 Credential=testing/"), call.url
        response = call.response()
        assert response is not None and response.status == 200, call.url
        unsigned = requests.get(call.url, timeout=10)
        assert (unsigned.status_code, unsigned.json()["error"]["code"]) == (403, "MISSING_AUTHENTICATION_TOKEN")
    assert seen.errors == []


def test_markup_in_ids_names_actors_and_reasons_shows_as_text(
    page: tuple[Page, Seen], stack: Stack, worksets: dict[str, Any]
) -> None:
    tab, seen = page

    # GIVEN an address from `workset dashboard`, credentials in its fragment
    credentials = ViewerCredentials("testing", "testing")
    tab.goto(dashboard_url(stack.api_url, credentials, stack.region))

    # THEN the page signed in, keeping the credentials in the tab and out of the address bar
    expect(workset_button(tab, HOSTILE_ID)).to_have_count(1, timeout=WAIT_MS)
    assert tab.url == f"{stack.api_url}/dashboard"
    assert tab.evaluate("sessionStorage.length") == 1

    # WHEN the hostile workset's history is opened
    workset_button(tab, HOSTILE_ID).click()

    # THEN every value shows as the very characters the API gave, and none of it became an element or ran
    expect(tab.locator("#detail-body .detail-id")).to_have_text(HOSTILE_ID, timeout=WAIT_MS)
    assert workset_button(tab, HOSTILE_ID).inner_text() == HOSTILE_ID
    expect(tab.locator("#detail-body .entry .actor").filter(has_text=HOSTILE_ACTOR)).to_have_count(2)
    expect(tab.locator("#detail-body .entry .reason").filter(has_text=HOSTILE_REASON)).to_have_count(2)
    expect(tab.locator("#decisions .reason").filter(has_text=HOSTILE_CLUSTER).first).to_be_visible(timeout=WAIT_MS)
    expect(tab.locator("#scheduler")).to_contain_text(HOSTILE_CLUSTER)
    assert tab.locator("#board img, #board script, #board b, #board svg").count() == 0
    assert tab.evaluate("window.pwned") is None
    assert (seen.dialogs, seen.errors) == ([], [])
    tab.screenshot(path=ARTIFACTS / "dashboard-hostile.png", full_page=True)


def test_a_long_history_loads_its_earlier_entries_on_request(
    page: tuple[Page, Seen], stack: Stack, api: ApiClient, worksets: dict[str, Any]
) -> None:
    tab, seen = page
    history = api.workset_history(LONG_HISTORY, limit=500)["history"]
    assert len(history) == 1 + 2 * CANCELS

    # GIVEN the newest 100 entries of a longer history on the page
    sign_in(tab, stack)
    workset_button(tab, LONG_HISTORY).click()
    expect(tab.locator("#detail-body .entry")).to_have_count(100, timeout=WAIT_MS)
    expect(tab.locator("#detail-body .gap")).to_contain_text("Earlier entries are not loaded yet")

    # WHEN the person asks for the earlier ones
    tab.get_by_role("button", name="Load earlier entries").click()

    # THEN the whole history shows, oldest first, from its registration, read from GET /worksets/{id}/history
    expect(tab.locator("#detail-body .entry")).to_have_count(len(history), timeout=WAIT_MS)
    expect(tab.locator("#detail-body .gap")).to_have_count(0)
    shown = tab.locator("#detail-body .entry").evaluate_all(
        "(entries) => entries.map((entry) => entry.dataset.version)"
    )
    versions = [int(version) for version in shown]
    assert versions == [entry["version"] for entry in history]
    assert timeline_changes(tab)[0] == "registered ready"
    assert any(urlsplit(call.url).path.endswith("/history") for call in seen.data_calls(stack.api_url))
    assert seen.errors == []


def test_it_refreshes_by_itself_until_paused(page: tuple[Page, Seen], stack: Stack, worksets: dict[str, Any]) -> None:
    tab, seen = page
    tab.clock.install()
    sign_in(tab, stack)
    expect(tab.locator("#updated")).to_have_text(UPDATED, timeout=WAIT_MS)

    # WHEN the refresh interval (10 s) passes, THEN the page reads the API again by itself
    with tab.expect_request(partial(_reads, stack, "/queue/stats")):
        tab.clock.run_for(11_000)

    # WHEN paused, THEN a minute passes without a read
    tab.get_by_role("button", name="Pause").click()
    expect(tab.locator("#updated")).to_contain_text("paused")
    reads_when_paused = len(seen.data_calls(stack.api_url))
    tab.clock.run_for(60_000)
    tab.wait_for_timeout(1_000)
    assert len(seen.data_calls(stack.api_url)) == reads_when_paused

    # AND resuming reads at once
    with tab.expect_request(partial(_reads, stack, "/queue/stats")):
        tab.get_by_role("button", name="Resume").click()


def _reads(stack: Stack, path: str, request: Request) -> bool:
    return request.url == f"{stack.api_url}{path}"


def test_credentials_the_api_refuses_sign_the_viewer_out_with_its_words(page: tuple[Page, Seen], stack: Stack) -> None:
    tab, _ = page

    sign_in(tab, stack, secret="not-the-secret")

    expect(tab.locator("#sign-in-error")).to_contain_text("INVALID_SIGNATURE", timeout=WAIT_MS)
    expect(tab.locator("#board")).to_be_hidden()
    assert tab.evaluate("sessionStorage.length") == 0


def cluster_cell(page: Page, workset_id: str) -> Any:
    """A workset's cell in the table's Cluster column (the sixth)."""
    # NOTE: a JSON string is a CSS string too (quotes and backslashes escaped), so any id can be matched exactly.
    return page.locator(f"#worksets tr[data-workset={json.dumps(workset_id, ensure_ascii=False)}] td:nth-child(6)")


def detail_fact(page: Page, term: str) -> Any:
    return page.locator("#detail-body .facts dt").filter(has_text=re.compile(f"^{term}$")).locator("+ dd")


def test_a_ready_workset_shows_the_cluster_it_is_assigned_to_not_the_one_it_last_ran_on(
    page: tuple[Page, Seen], stack: Stack, api: ApiClient, worksets: dict[str, Any]
) -> None:
    tab, seen = page

    # GIVEN the API says a ready workset last ran on one cluster and the scheduler assigned it to another (its
    # answers are the stack's, with those two fields set on the long-history workset, which waits unassigned)
    def reassigned(route: Route) -> None:
        response = route.fetch()
        body = response.json()
        for workset in body.get("worksets", [body]):
            if workset.get("workset_id") == LONG_HISTORY:
                workset.update(cluster="c1-ran-here", assigned_cluster="c2-goes-here")
        route.fulfill(response=response, json=body)

    tab.route(re.compile(rf"^{re.escape(stack.api_url)}/worksets(/[^/?]+)?(\?.*)?$"), reassigned)

    # WHEN a person signs in
    sign_in(tab, stack)

    # THEN its row shows the assignment, as `workset list` does, not the cluster of the earlier attempt
    expect(cluster_cell(tab, LONG_HISTORY)).to_have_text("c2-goes-here (assigned)", timeout=WAIT_MS)
    # AND a workset that ended shows the cluster that held it, and a ready one assigned nowhere shows none
    assert api.get_workset(VALID)["cluster"] == CLUSTER
    expect(cluster_cell(tab, VALID)).to_have_text(CLUSTER)
    assert api.get_workset(HOSTILE_ID).get("assigned_cluster") is None
    expect(cluster_cell(tab, HOSTILE_ID)).to_have_text("")

    # AND its history's facts say the same
    workset_button(tab, LONG_HISTORY).click()
    expect(detail_fact(tab, "cluster")).to_have_text("c2-goes-here (assigned)", timeout=WAIT_MS)
    workset_button(tab, VALID).click()
    expect(tab.locator("#detail-body .detail-id")).to_have_text(VALID, timeout=WAIT_MS)
    expect(detail_fact(tab, "cluster")).to_have_text(CLUSTER)
    workset_button(tab, HOSTILE_ID).click()
    expect(detail_fact(tab, "cluster")).to_have_text("not assigned yet", timeout=WAIT_MS)
    assert seen.errors == []


def test_the_filters_never_pair_a_cluster_with_a_state_no_cluster_holds(
    page: tuple[Page, Seen], stack: Stack, worksets: dict[str, Any]
) -> None:
    tab, seen = page
    sign_in(tab, stack)
    expect(tab.locator("#updated")).to_have_text(UPDATED, timeout=WAIT_MS)
    state = tab.locator("#filters select[name=state]")
    cluster = tab.locator("#filters select[name=cluster]")

    # WHEN a cluster is chosen, THEN the state filter offers only the states a cluster holds
    cluster.select_option(CLUSTER)
    for name in ("complete", "error", "canceled", "ignored", "archived"):
        expect(state.locator(f'option[value="{name}"]')).to_be_disabled()
    for name in ("", *CLUSTER_STATES):
        expect(state.locator(f'option[value="{name}"]')).to_be_enabled()
    expect(tab.locator("#filter-note")).to_contain_text("ready, locked or in progress only")
    # AND the card of such a state says what its click does
    expect(tab.locator('#states [data-state="error"]')).to_have_attribute(
        "title", re.compile("clears the cluster filter")
    )

    # WHEN the person clicks the error card, THEN the cluster filter is cleared, saying why, and the table lists
    # the error worksets
    tab.locator('#states [data-state="error"]').click()
    expect(cluster).to_have_value("")
    expect(state).to_have_value("error")
    expect(tab.locator("#filter-note")).to_have_text(
        f"Cluster {CLUSTER} cleared: a cluster holds only ready, locked and in-progress worksets."
    )
    expect(tab.locator(f'#worksets tr[data-workset="{INVALID}"]')).to_contain_text("error", timeout=WAIT_MS)
    # AND with that state, no cluster is offered
    expect(cluster.locator(f'option[value="{CLUSTER}"]')).to_be_disabled()
    expect(cluster.locator('option[value=""]')).to_be_enabled()
    tab.screenshot(path=ARTIFACTS / "dashboard-filters.png", full_page=True)

    # AND a state a cluster holds goes with a cluster as before
    state.select_option("ready")
    cluster.select_option(CLUSTER)
    expect(state).to_have_value("ready")
    expect(tab.locator("#worksets tbody")).to_contain_text("No workset matches these filters.", timeout=WAIT_MS)
    expect(tab.locator("#updated")).to_have_text(UPDATED)

    # AND the API refused none of the page's reads
    listed = [call for call in seen.data_calls(stack.api_url) if urlsplit(call.url).path == "/worksets"]
    assert listed and all(call.response().status == 200 for call in listed)
    expect(tab.locator("#problem")).to_be_hidden()
    assert seen.errors == []


def test_a_refused_worksets_query_stops_only_the_worksets_the_rest_keeps_refreshing(
    page: tuple[Page, Seen], stack: Stack, api: ApiClient, worksets: dict[str, Any], tmp_path: Path
) -> None:
    tab, seen = page
    probe = "dashboard refresh probe"

    # GIVEN the board, refreshing every 5 s, shows the worksets
    sign_in(tab, stack)
    tab.locator("#interval").select_option("5")
    expect(tab.locator(f'#worksets tr[data-workset="{VALID}"]')).to_have_count(1, timeout=WAIT_MS)

    # WHEN the API starts refusing the page of worksets it asks for, as it refuses a cluster with a finished state
    message = (
        "cluster lists the worksets a cluster holds now (in_progress, locked, ready); a workset in complete holds "
        "none: ask for state=complete without cluster"
    )

    def refuse(route: Route) -> None:
        error = {"code": "invalid_request", "message": message, "request_id": "e2e-refused"}
        route.fulfill(status=422, content_type="application/json", body=json.dumps({"error": error}))

    worksets_page = re.compile(rf"^{re.escape(stack.api_url)}/worksets(\?.*)?$")
    tab.route(worksets_page, refuse)

    # THEN at the next refresh the worksets panel drops its rows, which may no longer be right, and says why
    problem = tab.locator("#worksets-problem")
    expect(problem).to_contain_text(f"422 invalid_request: {message}", timeout=WAIT_MS)
    expect(tab.locator("#worksets tbody tr[data-workset]")).to_have_count(0)
    expect(tab.locator("#worksets tbody")).to_contain_text("this page could not be read")
    expect(tab.locator("#updated")).to_have_text(re.compile(r"^updated \d\d:\d\d:\d\d · 1 of 4 reads failed$"))
    # AND nothing else is stopped or flagged: the queue, the clusters and the decisions are drawn, with no banner
    expect(tab.locator(f'#clusters tr[data-cluster="{CLUSTER}"] .badge')).to_have_text("live")
    expect(tab.locator("#decisions li.waits").first).to_be_visible()
    for other in ("#problem", "#queue-problem", "#priorities-problem", "#clusters-problem", "#decisions-problem"):
        expect(tab.locator(other)).to_be_hidden()
    tab.screenshot(path=ARTIFACTS / "dashboard-worksets-refused.png", full_page=True)

    # WHEN a workset is registered meanwhile, THEN the states strip and the decisions show it, by themselves
    ready = api.queue_stats()["by_state"]["ready"]
    s3 = stack.client("s3")
    upload_workset(s3, stack.bucket, stack.prefix, waiting_folder(tmp_path, probe, NO_SUCH_CLUSTER), probe)
    wait_for(partial(find, api, probe), f"{probe} to be registered", seconds=20)
    expect(tab.locator('#states [data-state="ready"] .state-count')).to_have_text(str(ready + 1), timeout=WAIT_MS)
    expect(tab.locator("#decisions")).to_contain_text(probe, timeout=WAIT_MS)
    expect(problem).to_be_visible()

    # WHEN the API answers the worksets again, THEN the panel shows them at the next refresh, without its error
    tab.unroute(worksets_page)
    expect(tab.locator(f'#worksets tr[data-workset="{probe}"]')).to_have_count(1, timeout=WAIT_MS)
    expect(problem).to_be_hidden()
    expect(tab.locator("#updated")).to_have_text(UPDATED)

    # WHEN no read reaches the API, THEN the banner says so over the whole board, until the API is back
    unreachable = re.compile(rf"^{re.escape(stack.api_url)}/(queue|scheduler|clusters|worksets)")
    tab.route(unreachable, lambda route: route.abort())
    expect(tab.locator("#problem")).to_contain_text("the API could not be reached", timeout=WAIT_MS)
    expect(tab.locator("#board")).to_have_class(re.compile(r"\bstale\b"))
    tab.unroute(unreachable)
    expect(tab.locator("#problem")).to_be_hidden(timeout=WAIT_MS)
    expect(tab.locator("#board")).not_to_have_class(re.compile(r"\bstale\b"))
    # NOTE: Chromium logs each refused or aborted read on the console ("Failed to load resource: ...").
    assert all("Failed to load resource" in error for error in seen.errors), seen.errors


def test_a_long_id_takes_one_line_in_the_table_and_the_decisions_and_shows_whole_in_its_history(
    page: tuple[Page, Seen], stack: Stack, worksets: dict[str, Any]
) -> None:
    tab, seen = page
    sign_in(tab, stack)

    # GIVEN a workset with a 300-character id on the page; WHEN its history is opened
    link = workset_button(tab, LONG_ID)
    link.click()

    # THEN the history shows the whole id
    expect(tab.locator("#detail-body .detail-id")).to_have_text(LONG_ID, timeout=WAIT_MS)
    decision = tab.locator("#decisions button.link").filter(has_text=LONG_ID).first
    expect(decision).to_be_visible(timeout=WAIT_MS)
    tab.screenshot(path=ARTIFACTS / "dashboard-long-id.png", full_page=True)

    # AND in the table and in the decisions it is one line, cut with an ellipsis, its whole id its text and title
    for shown in (link, decision):
        assert shown.text_content() == LONG_ID
        expect(shown).to_have_attribute("title", LONG_ID)
        one_line = shown.evaluate("(e) => parseFloat(getComputedStyle(e).lineHeight)")
        box = shown.bounding_box()
        assert box is not None and box["height"] <= one_line * 1.5, (box, one_line)
        assert shown.evaluate("(e) => e.scrollWidth > e.clientWidth && getComputedStyle(e).textOverflow") == "ellipsis"

    # AND neither the table nor a decision is wider than its card, nor the decision much higher than another
    for inner, outer in (("#worksets", ".card.worksets"), ("#decisions li.waits >> nth=0", "#decisions")):
        inner_box, outer_box = tab.locator(inner).bounding_box(), tab.locator(outer).bounding_box()
        assert inner_box is not None and outer_box is not None
        assert inner_box["x"] + inner_box["width"] <= outer_box["x"] + outer_box["width"] + 1, (inner, outer)
    heights = tab.locator("#decisions li.waits").evaluate_all(
        "(items) => items.map((item) => [item.querySelector('button').title, item.getBoundingClientRect().height])"
    )
    tallest = max(height for title, height in heights if title == LONG_ID)
    shortest = min(height for title, height in heights)
    assert tallest <= shortest * 1.2, heights
    assert seen.errors == []
