// The dashboard's parts, each drawn from the API's answers: the states strip, the priority bars with the
// scheduler's facts, the clusters with their load, the worksets table, one workset's timeline and the recent
// scheduler decisions. Each function replaces what its element holds; all values go in as text (see dom.js).

import { badge, bar, clock, count, dollars, fill, h, humanState, tone, when } from "./dom.js";

export const STATES = ["ready", "locked", "in_progress", "complete", "error", "canceled", "ignored", "archived"];
export const PRIORITIES = ["urgent", "normal", "low"];
/** The states a cluster holds a workset in: GET /worksets takes `cluster` alone or with one of these (else 422). */
export const CLUSTER_STATES = ["ready", "locked", "in_progress"];
const DECISIONS_SHOWN = 60;

/** One card per state with its count (a click filters the table by it), and the total. With a cluster chosen, a
 * card of a state no cluster holds says that its click clears the cluster. */
export function renderStates(element, queue, { chosen, cluster, onChoose }) {
  const byState = queue.by_state || {};
  const total = STATES.reduce((sum, state) => sum + (byState[state] || 0), 0);
  const card = (state) =>
    h(
      "button",
      {
        type: "button",
        class: `state ${tone(state)}${chosen === state ? " chosen" : ""}`,
        "data-state": state,
        "aria-pressed": String(chosen === state),
        title: chosen === state ? "show every state" : stateTitle(state, cluster),
        onclick: () => onChoose(chosen === state ? "" : state),
      },
      h("span", { class: "state-count" }, count(byState[state])),
      h("span", { class: "state-name" }, humanState(state)),
    );

  fill(
    element,
    STATES.map(card),
    h(
      "div",
      { class: "state state-total", "data-state": "total" },
      h("span", { class: "state-count" }, count(total)),
      h("span", { class: "state-name" }, "total"),
    ),
  );
}

function stateTitle(state, cluster) {
  const title = `show the ${humanState(state)} worksets`;
  if (cluster && !CLUSTER_STATES.includes(state)) {
    return `${title} (clears the cluster filter: no cluster holds one)`;
  }
  return title;
}

/** Ready worksets by priority, as bars of their share of the ready queue. */
export function renderPriorities(element, queue) {
  const ready = queue.ready_by_priority || {};
  const total = PRIORITIES.reduce((sum, priority) => sum + (ready[priority] || 0), 0);
  fill(
    element,
    PRIORITIES.map((priority) =>
      h(
        "div",
        { class: "priority-row", "data-priority": priority },
        h("span", { class: "priority-name" }, priority),
        bar(ready[priority] || 0, total, count(ready[priority]), priority),
      ),
    ),
  );
}

/** What the scheduler knows: the ready queue, and what its latest tick did. */
export function renderScheduler(element, scheduler) {
  const tick = scheduler.last_tick;
  const facts = [
    ["ready", count(scheduler.ready)],
    ["not yet assigned", count(scheduler.unassigned)],
    ["latest tick", tick ? when(tick.at) : "none yet"],
  ];
  if (tick) {
    facts.push([
      "it decided",
      `${tick.assigned} assigned, ${tick.waiting} waiting, ${tick.expired} expired, ${tick.retried} retried, ` +
        `${tick.unassigned || 0} taken back, ${tick.conflicts} conflicts`,
    ]);
    for (const need of tick.clusters_needed || []) {
      const where = [need.region, need.availability_zone, need.cluster_name].filter(Boolean).join(", ");
      const waiting = `${need.worksets} workset${need.worksets === 1 ? "" : "s"}`;
      facts.push(["cluster needed", `${count(need.vcpus)} vCPUs${where ? ` (${where})` : ""} for ${waiting}`]);
    }
  }
  fill(
    element,
    facts.map(([term, value]) => [h("dt", {}, term), h("dd", {}, value)]),
  );
}

/** Each cluster with its liveness and its load: worksets held of its room, vCPUs taken of those it declared. */
export function renderClusters(tbody, scheduler, registered) {
  const details = new Map((registered.clusters || []).map((cluster) => [cluster.name, cluster]));
  const rows = (scheduler.clusters || []).map((load) => {
    const cluster = details.get(load.name) || {};
    const place = [cluster.region, cluster.availability_zone].filter(Boolean).join(" · ");
    const status = load.live ? "live" : load.status === "active" ? "silent" : load.status;
    const vcpus = load.vcpus
      ? bar(load.active_vcpus, load.vcpus, `${count(load.active_vcpus)} / ${count(load.vcpus)}`)
      : h("span", { class: "sub" }, `${count(load.active_vcpus)} (none declared)`);
    return h(
      "tr",
      { "data-cluster": load.name },
      h("td", {}, h("div", { class: "name" }, load.name), place ? h("div", { class: "sub" }, place) : null),
      h("td", {}, badge(status)),
      h("td", {}, bar(load.active_worksets, load.max_worksets, `${load.active_worksets} / ${load.max_worksets}`)),
      h("td", {}, vcpus),
      h("td", { class: "num" }, dollars(cluster.cost_per_vcpu_hour)),
      h("td", {}, cluster.last_heartbeat_at ? when(cluster.last_heartbeat_at) : ""),
    );
  });
  fill(tbody, rows.length ? rows : emptyRow(6, "No cluster is registered yet: an agent registers its own."));
}

/** A page of worksets; a click on an id shows its history. */
export function renderWorksets(tbody, page, { selected, onSelect }) {
  const rows = (page.worksets || []).map((workset) =>
    h(
      "tr",
      { class: workset.workset_id === selected ? "selected" : null, "data-workset": workset.workset_id },
      h("td", { class: "id" }, worksetLink(workset.workset_id, onSelect)),
      h(
        "td",
        {},
        badge(humanState(workset.state), workset.state),
        workset.error_category ? h("span", { class: "sub" }, ` ${workset.error_category}`) : null,
      ),
      h("td", {}, badge(workset.priority)),
      h("td", { class: "num" }, `${workset.attempt} / ${workset.max_attempts}`),
      h("td", { class: "num" }, count(workset.sample_count)),
      h("td", { class: "cluster" }, clusterShown(workset)),
      h("td", {}, when(workset.updated_at)),
    ),
  );
  fill(tbody, rows.length ? rows : emptyRow(7, "No workset matches these filters."));
}

/** The worksets table when its page could not be read: no rows, since the ones shown may not match the filters. */
export function renderWorksetsFailed(tbody) {
  fill(tbody, emptyRow(7, "No workset shown: this page could not be read."));
}

/** A workset id that opens its history: one line, cut with an ellipsis when long (style.css, `.id`); the whole id
 * stays its text and its title, and the history shows it in full. */
function worksetLink(worksetId, onSelect) {
  return h(
    "button",
    { type: "button", class: "link id", title: worksetId, onclick: () => onSelect(worksetId) },
    worksetId,
  );
}

/**
 * The cluster to show for a workset, as the `workset` command shows it (`cluster_shown`): while it is ready, the
 * one it is assigned to (`c2 (assigned)`), or none, since its `cluster` is where an earlier attempt ran; otherwise
 * the cluster that holds it or last held it.
 */
export function clusterShown(workset) {
  if (workset.state === "ready") {
    return workset.assigned_cluster ? [workset.assigned_cluster, h("span", { class: "sub" }, " (assigned)")] : "";
  }
  return workset.cluster || "";
}

/**
 * One workset: its facts, then its history as a timeline, oldest first. `timeline.entries` are the entries to show
 * in order; `timeline.gap` says whether earlier entries are still to be loaded (between `gapAfter` entries and the
 * rest), and `onLoadEarlier` loads them.
 */
export function renderDetail(element, detail, { onClose, onLoadEarlier }) {
  const close = h("button", { type: "button", class: "quiet close", onclick: onClose, title: "close" }, "Close");
  if (detail.missing !== undefined) {
    fill(element, h("p", { class: "empty" }, "There is no workset ", h("q", {}, detail.missing), "."), close);
    return;
  }

  const { workset, timeline } = detail;
  const header = h(
    "div",
    { class: "detail-head" },
    h("h3", { class: "detail-id", "data-workset": workset.workset_id }, workset.workset_id),
    badge(humanState(workset.state), workset.state),
    badge(workset.priority),
    close,
  );
  fill(element, header, worksetFacts(workset), reasonsList(workset), timelineList(timeline, onLoadEarlier));
}

function worksetFacts(workset) {
  const facts = [
    ["attempt", `${workset.attempt} of ${workset.max_attempts}`],
    ["cluster", clusterShown(workset) || (workset.state === "ready" ? "not assigned yet" : "none")],
    ["samples", count(workset.sample_count)],
    ["folder", `s3://${workset.bucket}/${workset.folder}`],
    ["registered", when(workset.created_at)],
    ["updated", when(workset.updated_at)],
  ];
  if (workset.progress) {
    facts.push(["progress", workset.progress]);
  }
  if (workset.lease) {
    facts.push(["lease", [`held by ${workset.lease.owner} until `, when(workset.lease.expires_at)]]);
  }
  if (workset.retry_at) {
    facts.push(["retries at", when(workset.retry_at)]);
  }
  if (workset.error_category) {
    facts.push(["error", badge(workset.error_category, "error")]);
  }
  return h(
    "dl",
    { class: "facts" },
    facts.map(([term, value]) => [h("dt", {}, term), h("dd", {}, value)]),
  );
}

function reasonsList(workset) {
  const reasons = workset.error_reasons || [];
  return reasons.length ? h("ul", { class: "reasons" }, reasons.map((reason) => h("li", {}, reason))) : null;
}

function timelineList(timeline, onLoadEarlier) {
  const items = timeline.entries.map(timelineEntry);
  if (timeline.gap) {
    const more = h(
      "li",
      { class: "gap" },
      h("span", {}, "Earlier entries are not loaded yet. "),
      h("button", { type: "button", onclick: onLoadEarlier, disabled: timeline.loading }, "Load earlier entries"),
    );
    items.splice(timeline.gapAfter, 0, more);
  }
  return h(
    "section",
    { class: "history", "aria-label": "history" },
    h("h4", {}, `Timeline (${timeline.entries.length} ${timeline.entries.length === 1 ? "entry" : "entries"})`),
    h("ol", { class: "timeline" }, items),
  );
}

function timelineEntry(entry) {
  const into = badge(humanState(entry.to_state), entry.to_state);
  const change =
    entry.event === "transition"
      ? [badge(humanState(entry.from_state), entry.from_state), h("span", { class: "arrow" }, "→"), into]
      : [h("span", { class: "event" }, entry.event), into];
  return h(
    "li",
    { class: `entry ${tone(entry.to_state)}`, "data-version": entry.version },
    h("div", { class: "change" }, change),
    h(
      "div",
      { class: "meta" },
      when(entry.at),
      h("span", { title: "attempt" }, `#${entry.attempt}`),
      h("span", {}, "by ", h("span", { class: "actor" }, entry.actor)),
      entry.cluster ? h("span", {}, "on ", entry.cluster) : null,
      entry.error_category ? badge(entry.error_category, "error") : null,
    ),
    entry.reason ? h("p", { class: "reason" }, entry.reason) : null,
  );
}

/** The decisions of the scheduler's recent ticks, newest first, each with its reason. */
export function renderDecisions(list, scheduler, { onSelect }) {
  const decisions = scheduler.recent_decisions || [];
  const items = decisions.slice(0, DECISIONS_SHOWN).map((decision) => {
    const outcome = decision.cluster
      ? h("span", { class: "outcome" }, "→ ", h("span", { class: "name" }, decision.cluster))
      : badge("waits", "waits");
    const estimate = [
      decision.vcpus ? `${count(decision.vcpus)} vCPUs` : null,
      dollars(decision.estimated_cost),
      decision.need ? `needs a cluster of ${count(decision.need.vcpus)} vCPUs` : null,
    ].filter(Boolean);
    return h(
      "li",
      { class: decision.cluster ? "assigned" : "waits" },
      h("time", { datetime: decision.at, title: decision.at }, clock(decision.at)),
      worksetLink(decision.workset_id, onSelect),
      outcome,
      estimate.length ? h("span", { class: "sub" }, estimate.join(" · ")) : null,
      h("p", { class: "reason" }, decision.reason),
    );
  });
  if (decisions.length > DECISIONS_SHOWN) {
    items.push(h("li", { class: "sub" }, `and ${count(decisions.length - DECISIONS_SHOWN)} older decisions`));
  }
  fill(list, items.length ? items : h("li", { class: "empty" }, "No decision in the last 10 minutes."));
}

function emptyRow(columns, words) {
  return h("tr", { class: "empty" }, h("td", { colspan: columns }, words));
}
