// Building the page's elements, and the words and numbers it shows.
//
// Every value from the API goes into the page as text (a text node, or an attribute set with setAttribute), never
// as markup: a workset id like `<img src=x onerror=...>` shows as those characters. Nothing here parses HTML.

/**
 * An element: `h("td", { class: "num", title: "..." }, "text", otherElement)`.
 * Strings and numbers become text nodes; `on<event>` props take functions; other props are attributes.
 */
export function h(tag, props = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (value === null || value === undefined || value === false) {
      continue;
    }
    if (name.startsWith("on")) {
      if (typeof value !== "function") {
        throw new TypeError(`${name} takes a function`);
      }
      element.addEventListener(name.slice(2), value);
    } else if (name === "class") {
      element.className = value;
    } else {
      element.setAttribute(name, value === true ? "" : String(value));
    }
  }
  element.append(...texts(children));
  return element;
}

function texts(children) {
  return children
    .flat(Infinity)
    .filter((child) => child !== null && child !== undefined && child !== false)
    .map((child) => (child instanceof Node ? child : String(child)));
}

/** Replace what an element holds. */
export function fill(element, ...children) {
  element.replaceChildren(...texts(children));
}

/** A bar `value` of `max` long, with its words beside it. The width is set through the CSSOM, which the page's
 * Content-Security-Policy allows (an inline style attribute it would refuse). */
export function bar(value, max, words, kind = null) {
  const share = max > 0 ? Math.min(value / max, 1) : 0;
  const inner = h("span", { class: "bar-fill" });
  inner.style.width = `${(share * 100).toFixed(1)}%`;
  return h(
    "span",
    { class: kind ? `bar ${tone(kind)}` : "bar" },
    h("span", { class: "bar-track", role: "presentation" }, inner),
    h("span", { class: "bar-words" }, words),
  );
}

/** The class that colours an element for a state, priority or cluster status (style.css, "tones"). */
export function tone(kind) {
  return `tone-${String(kind).replace(/[^a-z_]/g, "")}`;
}

/** A state, priority or status as a coloured label. */
export function badge(text, kind = text) {
  return h("span", { class: `badge ${tone(kind)}` }, text);
}

export function humanState(state) {
  return String(state).replace(/_/g, " ");
}

const SECOND = 1000;
const MINUTE = 60 * SECOND;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;

/** A time as the viewer's clock shows it: the time alone today, else with its date. */
export function clock(iso, now = new Date()) {
  const moment = new Date(iso);
  if (Number.isNaN(moment.getTime())) {
    return String(iso);
  }
  const time = moment.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });
  if (moment.toDateString() === now.toDateString()) {
    return time;
  }
  return `${moment.toLocaleDateString([], { month: "short", day: "numeric" })} ${time}`;
}

/** How long ago: "4 s ago", "3 min ago", "2 h ago", "5 d ago". */
export function ago(iso, now = Date.now()) {
  const elapsed = now - new Date(iso).getTime();
  if (Number.isNaN(elapsed)) {
    return "";
  }
  if (elapsed < 0) {
    return "just now";
  }
  if (elapsed < MINUTE) {
    return `${Math.floor(elapsed / SECOND)} s ago`;
  }
  if (elapsed < HOUR) {
    return `${Math.floor(elapsed / MINUTE)} min ago`;
  }
  if (elapsed < DAY) {
    return `${Math.floor(elapsed / HOUR)} h ago`;
  }
  return `${Math.floor(elapsed / DAY)} d ago`;
}

/** A time with both: "14:02:11 (4 s ago)", its full ISO form as the tooltip. */
export function when(iso) {
  return h("time", { datetime: iso, title: iso }, clock(iso), " ", h("span", { class: "ago" }, `(${ago(iso)})`));
}

export function count(number) {
  return Number(number || 0).toLocaleString("en-US");
}

export function dollars(amount) {
  return amount === null || amount === undefined ? "" : `$${Number(amount).toFixed(Number(amount) < 1 ? 4 : 2)}`;
}
