// The dashboard: signs the viewer in, reads the API every few seconds and draws what it answered.
//
// One refresh reads GET /queue/stats, /scheduler/stats, /clusters and a page of /worksets (with the filters and the
// page's token), plus /worksets/{id} for the workset whose history is shown; earlier history entries of a long
// history come from /worksets/{id}/history on request. Every call is signed (api.js). A refused signature signs the
// viewer out with the API's words. Each part of the board is drawn from the reads it needs as soon as they all
// answered: a read that fails leaves its parts with its error (and the worksets table without its rows), while the
// others are drawn as usual; the banner says when every read failed. The next refresh tries again.

import {
  Api,
  ApiError,
  credentialsFrom,
  defaultRegion,
  expired,
  forgetCredentials,
  segment,
  storeCredentials,
  storedCredentials,
  takeCredentialsFromAddress,
} from "./api.js";
import { clock, fill, h, humanState } from "./dom.js";
import {
  CLUSTER_STATES,
  PRIORITIES,
  STATES,
  renderClusters,
  renderDecisions,
  renderDetail,
  renderPriorities,
  renderScheduler,
  renderStates,
  renderWorksets,
  renderWorksetsFailed,
} from "./views.js";

const HISTORY_PAGE = 500;
/** Why the filters pair a cluster only with some states (CLUSTER_STATES). */
const HELD = "a cluster holds only ready, locked and in-progress worksets";
/** How many pages of /worksets/{id}/history one "Load earlier entries" reads at most (5,000 entries). */
const EARLIER_PAGES_PER_LOAD = 10;

const $ = (id) => document.getElementById(id);

const view = {
  api: null,
  credentials: null,
  run: 0, // the latest refresh; an older one that ends later is dropped
  timer: null,
  paused: false,
  stale: false, // a refresh was skipped while the tab was hidden
  filters: { state: "", priority: "", cluster: "", limit: "25" },
  filterNote: "", // why a filter was just cleared
  pageTokens: [null], // pageTokens[i] reads page i + 1
  page: 0,
  nextToken: null,
  selected: null,
  earlier: null, // { worksetId, entries, token, done, loading }: earlier history entries loaded on request
  lastDetail: null,
};

function start() {
  wireControls();

  let credentials;
  try {
    credentials = takeCredentialsFromAddress();
  } catch (error) {
    showSignIn(`The address carried credentials that cannot be used: ${error.message}.`);
    return;
  }
  if (credentials) {
    storeCredentials(credentials);
  }
  credentials = credentials || storedCredentials();

  if (!credentials) {
    showSignIn();
  } else if (expired(credentials)) {
    forgetCredentials();
    showSignIn(`Your temporary credentials expired at ${clock(credentials.expires)}: sign in again.`);
  } else {
    signIn(credentials);
  }
}

// --- signing in and out -----------------------------------------------------------------------------------------

function signIn(credentials) {
  view.credentials = credentials;
  view.api = new Api(credentials);
  $("sign-in").hidden = true;
  $("board").hidden = false;
  $("controls").hidden = false;

  const key = credentials.accessKeyId;
  const shown = key.length > 8 ? `${key.slice(0, 4)}…${key.slice(-4)}` : key;
  const expiry = credentials.expires ? ` · until ${clock(credentials.expires)}` : "";
  fill($("who"), `key ${shown} · ${credentials.region}${expiry}`);
  refresh();
}

function signOut(message) {
  clearTimeout(view.timer);
  forgetCredentials();
  view.api = null;
  view.credentials = null;
  view.run += 1;
  showSignIn(message);
}

function showSignIn(message) {
  $("board").hidden = true;
  $("controls").hidden = true;
  $("sign-in").hidden = false;

  const form = $("sign-in-form");
  form.reset();
  form.elements.region.value = defaultRegion();
  const error = $("sign-in-error");
  error.hidden = !message;
  fill(error, message || "");
  form.elements.access_key_id.focus();
}

function submitSignIn(event) {
  event.preventDefault();
  const form = event.currentTarget;
  const entered = new FormData(form);

  let credentials;
  try {
    credentials = credentialsFrom({
      accessKeyId: entered.get("access_key_id"),
      secretAccessKey: entered.get("secret_access_key"),
      sessionToken: entered.get("session_token"),
      region: entered.get("region"),
    });
  } catch (error) {
    const shown = $("sign-in-error");
    shown.hidden = false;
    fill(shown, `${error.message}.`);
    return;
  }
  form.reset();
  storeCredentials(credentials);
  signIn(credentials);
}

// --- refreshing -------------------------------------------------------------------------------------------------

async function refresh() {
  clearTimeout(view.timer);
  if (!view.api) {
    return;
  }
  const run = ++view.run;
  const api = view.api;

  const query = { ...view.filters, next_token: view.pageTokens[view.page] };
  const reads = {
    queue: api.get("queue/stats"),
    scheduler: api.get("scheduler/stats"),
    clusters: api.get("clusters"),
    page: api.get("worksets", query),
  };
  if (view.selected !== null) {
    reads.detail = readWorkset(api, view.selected);
  }
  const names = Object.keys(reads);
  const settled = await Promise.allSettled(Object.values(reads));
  if (run !== view.run) {
    return;
  }

  const answers = {};
  const failures = {};
  names.forEach((name, index) => {
    const outcome = settled[index];
    if (outcome.status === "fulfilled") {
      answers[name] = outcome.value;
    } else {
      failures[name] = outcome.reason;
    }
  });
  const refused = Object.values(failures).find((error) => error instanceof ApiError && error.refusedCredentials);
  if (refused) {
    signOut(`The API refused these credentials: ${refused.message} (${refused.code}).`);
    return;
  }

  const at = clock(new Date().toISOString());
  const failed = Object.keys(failures).length;
  if (failed === names.length) {
    $("board").classList.add("stale");
    showProblem(`Refresh failed at ${at}: ${describe(failures.queue)}. It tries again by itself.`);
  } else {
    $("board").classList.remove("stale");
    $("problem").hidden = true;
    draw(answers, failures, at);
    const partly = failed ? ` · ${failed} of ${names.length} reads failed` : "";
    fill($("updated"), `updated ${at}${partly}${view.paused ? " · paused" : ""}`);
  }
  schedule();
}

function schedule() {
  clearTimeout(view.timer);
  if (view.paused || !view.api) {
    return;
  }
  const seconds = Number($("interval").value);
  view.timer = setTimeout(() => {
    if (document.hidden) {
      view.stale = true;
    } else {
      refresh();
    }
  }, seconds * 1000);
}

async function readWorkset(api, worksetId) {
  try {
    return { workset: await api.get(`worksets/${segment(worksetId)}`) };
  } catch (error) {
    if (error instanceof ApiError && error.status === 404) {
      return { missing: worksetId };
    }
    throw error;
  }
}

function describe(error) {
  if (error instanceof ApiError) {
    return `${error.status} ${error.code}: ${error.message}${error.requestId ? ` (request ${error.requestId})` : ""}`;
  }
  return `the API could not be reached (${error.message})`;
}

function showProblem(message) {
  const problem = $("problem");
  problem.hidden = false;
  fill(problem, message);
}

// --- drawing ----------------------------------------------------------------------------------------------------

/** Each part's error element, and the reads the part is drawn from. */
const PARTS = {
  "queue-problem": ["queue"],
  "priorities-problem": ["queue", "scheduler"],
  "clusters-problem": ["scheduler", "clusters"],
  "worksets-problem": ["page"],
  "detail-problem": ["detail"],
  "decisions-problem": ["scheduler"],
};
/** Each read as its failure names it. */
const READS = {
  queue: "The queue",
  scheduler: "The scheduler's state",
  clusters: "The clusters",
  page: "This page of worksets",
  detail: "This workset",
};

function draw(answers, failures, at) {
  const { queue, scheduler, clusters, page, detail } = answers;
  const drawn = (reads) => reads.every((name) => name in answers);

  if (drawn(["queue"])) {
    renderStates($("states"), queue, {
      chosen: view.filters.state,
      cluster: view.filters.cluster,
      onChoose: (state) => setFilter("state", state),
    });
    renderPriorities($("priorities"), queue);
  }
  if (drawn(["scheduler"])) {
    renderScheduler($("scheduler"), scheduler);
    renderDecisions($("decisions"), scheduler, { onSelect: select });
  }
  if (drawn(["scheduler", "clusters"])) {
    renderClusters($("clusters").tBodies[0], scheduler, clusters);
  }
  if (drawn(["clusters"])) {
    clusterChoices(clusters);
  }

  if (drawn(["page"])) {
    view.nextToken = page.next_token || null;
    renderWorksets($("worksets").tBodies[0], page, { selected: view.selected, onSelect: select });
  } else {
    view.nextToken = null;
    renderWorksetsFailed($("worksets").tBodies[0]);
  }
  fill($("page"), `page ${view.page + 1}`);
  $("previous").disabled = view.page === 0;
  $("next").disabled = !view.nextToken;

  if (view.selected === null || drawn(["detail"])) {
    view.lastDetail = view.selected === null ? null : detail;
    drawDetail();
  }

  for (const [id, reads] of Object.entries(PARTS)) {
    const failed = reads.find((name) => name in failures);
    const why = failed && `${READS[failed]} could not be read at ${at}: ${describe(failures[failed])}.`;
    showPartProblem(id, why && `${why} It tries again by itself.`);
  }
}

/** A part's error above what it shows (then marked stale), or none. */
function showPartProblem(id, message) {
  const problem = $(id);
  problem.hidden = !message;
  fill(problem, message || "");
  problem.parentElement.classList.toggle("part-stale", Boolean(message));
}

function drawDetail() {
  const body = $("detail-body");
  const detail = view.lastDetail;
  if (view.selected === null || !detail) {
    fill(body, h("p", { class: "empty" }, "Choose a workset to see its history."));
    return;
  }
  if (detail.missing !== undefined) {
    renderDetail(body, detail, { onClose: () => select(null) });
    return;
  }
  renderDetail(
    body,
    { workset: detail.workset, timeline: timelineOf(detail.workset) },
    { onClose: () => select(null), onLoadEarlier: () => loadEarlier(detail.workset) },
  );
}

/** The entries to show: the newest 100 that GET /worksets/{id} gives, after the earlier ones loaded on request. */
function timelineOf(workset) {
  const newest = workset.history || [];
  const earlier = view.earlier && view.earlier.worksetId === workset.workset_id ? view.earlier : null;
  if (workset.history_complete || !newest.length) {
    return { entries: newest, gap: false };
  }
  if (!earlier) {
    return { entries: newest, gap: true, gapAfter: 0 };
  }

  const firstNewest = newest[0].version;
  const before = earlier.entries.filter((entry) => entry.version < firstNewest);
  const joined = earlier.entries.some((entry) => entry.version >= firstNewest);
  return { entries: [...before, ...newest], gap: !joined, gapAfter: before.length, loading: earlier.loading };
}

/** Read earlier history entries, oldest first, until they meet the newest ones shown, or for a bounded number of
 * pages (then the button reads on from where it stopped). */
async function loadEarlier(workset) {
  const worksetId = workset.workset_id;
  if (!view.earlier || view.earlier.worksetId !== worksetId) {
    view.earlier = { worksetId, entries: [], token: null, done: false, loading: false };
  }
  const earlier = view.earlier;
  const firstNewest = workset.history[0].version;
  earlier.loading = true;
  drawDetail();

  try {
    for (let pages = 0; pages < EARLIER_PAGES_PER_LOAD && !earlier.done; pages += 1) {
      const page = await view.api.get(`worksets/${segment(worksetId)}/history`, {
        limit: HISTORY_PAGE,
        next_token: earlier.token,
      });
      earlier.entries.push(...page.history);
      earlier.token = page.next_token || null;
      earlier.done = !earlier.token || earlier.entries.some((entry) => entry.version >= firstNewest);
    }
  } catch (error) {
    showPartProblem("detail-problem", `Loading the earlier history of ${worksetId} failed: ${describe(error)}.`);
  } finally {
    earlier.loading = false;
  }
  if (view.earlier === earlier) {
    drawDetail();
  }
}

// --- the viewer's choices ---------------------------------------------------------------------------------------

function select(worksetId) {
  view.selected = worksetId;
  view.earlier = null;
  view.lastDetail = null;
  drawDetail();
  refresh();
}

function setFilter(name, value) {
  view.filters[name] = value;
  view.filterNote = keepFiltersAnswerable(name);
  const elements = $("filters").elements;
  for (const filter of ["state", "priority", "cluster", "limit"]) {
    elements[filter].value = view.filters[filter];
  }
  filterChoices();
  view.pageTokens = [null];
  view.page = 0;
  refresh();
}

/**
 * The API lists by cluster only what a cluster holds now (ready, locked, in progress) and refuses `cluster` with any
 * other state. The selects do not offer such a pair (filterChoices); a state card can still ask for one, and then
 * the newest choice wins: the other filter is cleared, and the words returned say so.
 */
function keepFiltersAnswerable(changed) {
  const { state, cluster } = view.filters;
  if (!state || !cluster || CLUSTER_STATES.includes(state)) {
    return "";
  }
  if (changed === "cluster") {
    view.filters.state = "";
    return `State ${humanState(state)} cleared: ${HELD}.`;
  }
  view.filters.cluster = "";
  return `Cluster ${cluster} cleared: ${HELD}.`;
}

/** Offer only the pairs of state and cluster the API answers, and say why the others are not offered. */
function filterChoices() {
  const elements = $("filters").elements;
  const { state, cluster } = view.filters;
  for (const option of elements.state.options) {
    option.disabled = Boolean(cluster) && option.value !== "" && !CLUSTER_STATES.includes(option.value);
  }
  const unheld = Boolean(state) && !CLUSTER_STATES.includes(state);
  for (const option of elements.cluster.options) {
    option.disabled = unheld && option.value !== "";
  }

  let note = view.filterNote;
  if (!note && cluster) {
    note = "With a cluster: ready, locked or in progress only, the states a cluster holds.";
  } else if (!note && unheld) {
    note = `No cluster with ${humanState(state)}: ${HELD}.`;
  }
  const shown = $("filter-note");
  shown.hidden = !note;
  fill(shown, note);
}

function clusterChoices(clusters) {
  const choice = $("filters").elements.cluster;
  const names = (clusters.clusters || []).map((cluster) => cluster.name);
  if (view.filters.cluster && !names.includes(view.filters.cluster)) {
    names.push(view.filters.cluster);
  }
  fill(choice, h("option", { value: "" }, "any"), names.map((name) => h("option", { value: name }, name)));
  choice.value = view.filters.cluster;
  filterChoices();
}

function wireControls() {
  const filters = $("filters");
  fill(filters.elements.state, h("option", { value: "" }, "any"), STATES.map((s) => h("option", { value: s }, s)));
  fill(
    filters.elements.priority,
    h("option", { value: "" }, "any"),
    PRIORITIES.map((priority) => h("option", { value: priority }, priority)),
  );
  filters.addEventListener("change", (event) => setFilter(event.target.name, event.target.value));
  filters.addEventListener("submit", (event) => event.preventDefault());

  $("previous").addEventListener("click", () => {
    view.page = Math.max(view.page - 1, 0);
    refresh();
  });
  $("next").addEventListener("click", () => {
    if (view.nextToken) {
      view.pageTokens[view.page + 1] = view.nextToken;
      view.page += 1;
      refresh();
    }
  });

  $("pause").addEventListener("click", () => {
    view.paused = !view.paused;
    fill($("pause"), view.paused ? "Resume" : "Pause");
    $("pause").setAttribute("aria-pressed", String(view.paused));
    if (view.paused) {
      clearTimeout(view.timer);
      fill($("updated"), `${$("updated").textContent.replace(/ · paused$/, "")} · paused`);
    } else {
      refresh();
    }
  });
  $("refresh").addEventListener("click", () => refresh());
  $("interval").addEventListener("change", () => schedule());
  $("sign-out").addEventListener("click", () => signOut("Signed out: the credentials were removed from this tab."));
  $("sign-in-form").addEventListener("submit", submitSignIn);
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && view.stale && !view.paused) {
      view.stale = false;
      refresh();
    }
  });
}

start();
