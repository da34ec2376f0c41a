// The dashboard: signs the viewer in, reads the API every few seconds and draws what it answered.
//
// One refresh reads GET /queue/stats, /scheduler/stats, /clusters and a page of /worksets (with the filters and the
// page's token), plus /worksets/{id} for the workset whose history is shown; earlier history entries of a long
// history come from /worksets/{id}/history on request. Every call is signed (api.js). A refused signature signs the
// viewer out with the API's words; any other failure is shown and the next refresh tries again.

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
import { clock, fill, h } from "./dom.js";
import {
  PRIORITIES,
  STATES,
  renderClusters,
  renderDecisions,
  renderDetail,
  renderPriorities,
  renderScheduler,
  renderStates,
  renderWorksets,
} from "./views.js";

const HISTORY_PAGE = 500;
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

  try {
    const query = { ...view.filters, next_token: view.pageTokens[view.page] };
    const [queue, scheduler, clusters, page, detail] = await Promise.all([
      api.get("queue/stats"),
      api.get("scheduler/stats"),
      api.get("clusters"),
      api.get("worksets", query),
      view.selected === null ? null : readWorkset(api, view.selected),
    ]);
    if (run !== view.run) {
      return;
    }

    draw({ queue, scheduler, clusters, page, detail });
    fill($("updated"), `updated ${clock(new Date().toISOString())}${view.paused ? " · paused" : ""}`);
    $("problem").hidden = true;
  } catch (error) {
    if (run !== view.run) {
      return;
    }
    if (error instanceof ApiError && error.refusedCredentials) {
      signOut(`The API refused these credentials: ${error.message} (${error.code}).`);
      return;
    }
    showProblem(`Refresh failed at ${clock(new Date().toISOString())}: ${describe(error)}. It tries again by itself.`);
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

function draw({ queue, scheduler, clusters, page, detail }) {
  renderStates($("states"), queue, { chosen: view.filters.state, onChoose: (state) => setFilter("state", state) });
  renderPriorities($("priorities"), queue);
  renderScheduler($("scheduler"), scheduler);
  renderClusters($("clusters").tBodies[0], scheduler, clusters);
  clusterChoices(clusters);

  view.nextToken = page.next_token || null;
  renderWorksets($("worksets").tBodies[0], page, { selected: view.selected, onSelect: select });
  fill($("page"), `page ${view.page + 1}`);
  $("previous").disabled = view.page === 0;
  $("next").disabled = !view.nextToken;

  view.lastDetail = detail;
  drawDetail();
  renderDecisions($("decisions"), scheduler, { onSelect: select });
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
    showProblem(`Loading the history of ${worksetId} failed: ${describe(error)}.`);
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
  $("filters").elements[name].value = value;
  view.pageTokens = [null];
  view.page = 0;
  refresh();
}

function clusterChoices(clusters) {
  const choice = $("filters").elements.cluster;
  const names = (clusters.clusters || []).map((cluster) => cluster.name);
  if (view.filters.cluster && !names.includes(view.filters.cluster)) {
    names.push(view.filters.cluster);
  }
  fill(choice, h("option", { value: "" }, "any"), names.map((name) => h("option", { value: name }, name)));
  choice.value = view.filters.cluster;
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
