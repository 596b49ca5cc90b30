// The live scoreboard: follows the `scores` cache through pushgrid.js and
// keeps one card per match, flashing a score when it changes. The + and −
// buttons write with compare-and-set (through the WebSocket, or REST when
// the page runs over SSE or long polling). `?transport=sse` or
// `?transport=poll` forces a transport; `?token=...` presents a token, and
// a node that refuses the page's token (or its lack) gets a form for one.

import { PushgridClient, TRANSPORT_NAMES } from "/static/pushgrid.js";

const CACHE = "scores";
const board = document.getElementById("board");
const empty = document.getElementById("empty");
const connection = document.getElementById("connection");
const connectionText = document.getElementById("connection-text");
const rate = document.getElementById("event-rate");
const template = document.getElementById("card-template");
const tokenForm = document.getElementById("token-form");
const WAITING_TEXT = empty.textContent;
const TOKEN_KEY = "pushgrid-token";

const STATUS_TEXT = { scheduled: "Soon", live: "Live", half_time: "Half time", full_time: "Full time" };
const STATUS_ORDER = { live: 0, half_time: 1, scheduled: 2, full_time: 3 };
const CONNECTION_TEXT = {
  connecting: "Connecting…", live: "Live", degraded: "Cut off from the cluster", reconnecting: "Reconnecting…", offline: "Offline", unauthorized: "Not authorized",
};

/** key -> { value, version, card } */
const matches = new Map();

const params = new URLSearchParams(location.search);
const client = new PushgridClient({
  // A node with [auth] tokens: open the page as /?token=..., or give the
  // token in the form it shows (kept for this tab's session).
  token: params.get("token") || sessionStorage.getItem(TOKEN_KEY) || undefined,
  transport: params.get("transport") || "auto",
  upgradeAfterMs: Number(params.get("upgrade_after_ms")) || undefined,
  onStatus(status, transport) {
    connection.dataset.state = status;
    connection.dataset.transport = transport;
    const text = CONNECTION_TEXT[status] || status;
    connectionText.textContent = status === "live" ? `${text} · ${TRANSPORT_NAMES[transport] || transport}` : text;
    const refused = status === "unauthorized";
    tokenForm.classList.toggle("hidden", !refused);
    if (refused) showNotice("Not authorized to read the scores.");
    else if (status === "live" && empty.dataset.notice) showNotice(null);
  },
});

tokenForm.addEventListener("submit", (e) => {
  e.preventDefault();
  const token = tokenForm.elements.token.value.trim();
  if (!token) return;
  sessionStorage.setItem(TOKEN_KEY, token);
  tokenForm.classList.add("hidden");
  showNotice(null);
  client.setToken(token);
});

/** Says why the board is empty; `null` goes back to waiting for kick-off. */
function showNotice(text) {
  if (text) empty.dataset.notice = "true";
  else delete empty.dataset.notice;
  empty.textContent = text || WAITING_TEXT;
  empty.classList.toggle("hidden", !text && matches.size > 0);
}
window.pushgridClient = client; // for the browser test and the curious

client.subscribe(CACHE, { prefix: "match/" }, {
  onSnapshot(entries, { reset }) {
    const keep = new Set(entries.map((e) => e.key));
    for (const key of [...matches.keys()]) if (!keep.has(key)) removeMatch(key);
    for (const entry of entries) upsert(entry.key, entry.value, entry.version, !reset && !matches.has(entry.key));
    layout();
  },
  onEvent(event) {
    if (event.kind === "removed" || event.kind === "expired") removeMatch(event.key);
    else upsert(event.key, event.value, event.version, true);
    layout();
  },
  onError(error) {
    for (const key of [...matches.keys()]) removeMatch(key);
    showNotice(error.code === "unauthorized" ? "Not authorized to read the scores." : `Cannot follow the scores: ${error.message}`);
  },
});

setInterval(() => {
  rate.textContent = client.status === "live" ? `${client.eventRate().toFixed(1)} events/s` : "";
}, 500);

function upsert(key, value, version, animate) {
  let match = matches.get(key);
  if (!match) {
    const card = template.content.firstElementChild.cloneNode(true);
    card.dataset.key = key;
    // Faded in once: moving the card when the board reorders must not
    // replay the fade (an element re-inserted restarts its animations).
    card.addEventListener("animationend", (e) => {
      if (e.animationName === "appear") card.classList.add("shown");
    });
    card.addEventListener("click", (e) => {
      const button = e.target.closest("button");
      if (button) changeScore(key, button.dataset.side, button.classList.contains("plus") ? 1 : -1);
    });
    match = { value: null, version: 0, card };
    matches.set(key, match);
  }
  const previous = match.value;
  match.value = value;
  match.version = version;
  render(match, previous, animate);
}

function render({ card, value }, previous, animate) {
  card.querySelector(".league").textContent = value.league || "";
  card.querySelector(".home .name").textContent = value.home;
  card.querySelector(".away .name").textContent = value.away;
  const status = card.querySelector(".status");
  status.dataset.status = value.status;
  status.textContent = value.status === "live" ? `${minuteText(value.minute)}` : STATUS_TEXT[value.status] || value.status;
  card.dataset.status = value.status;
  for (const side of ["home", "away"]) {
    const score = card.querySelector(`.${side}-score`);
    const now = value[`${side}_score`];
    score.textContent = now;
    if (animate && previous && previous[`${side}_score`] !== now) {
      score.classList.remove("flash");
      void score.offsetWidth; // restart the animation
      score.classList.add("flash");
    }
  }
  const goals = card.querySelector(".goals");
  goals.replaceChildren(
    ...(value.goals || []).map((goal) => {
      const li = document.createElement("li");
      li.className = goal.side;
      // A goal added by hand on the page has no scorer: it names the club.
      li.textContent = `${goal.minute}' ${goal.scorer || (goal.side === "home" ? value.home : value.away)}`;
      return li;
    }),
  );
}

function minuteText(minute) {
  return minute > 90 ? `90+${minute - 90}'` : `${minute}'`;
}

function removeMatch(key) {
  const match = matches.get(key);
  if (!match) return;
  matches.delete(key);
  match.card.classList.add("leaving");
  setTimeout(() => match.card.remove(), 400);
}

function layout() {
  const ordered = [...matches.entries()].sort(([ka, a], [kb, b]) => {
    const byStatus = (STATUS_ORDER[a.value.status] ?? 9) - (STATUS_ORDER[b.value.status] ?? 9);
    return byStatus || ka.localeCompare(kb, undefined, { numeric: true });
  });
  ordered.forEach(([, match], i) => {
    if (board.children[i] !== match.card) board.insertBefore(match.card, board.children[i] || null);
  });
  empty.classList.toggle("hidden", matches.size > 0 && !empty.dataset.notice);
}

/** A person's change: written with compare-and-set, retried once on a race. */
async function changeScore(key, side, delta, retried = false) {
  const match = matches.get(key);
  if (!match) return;
  const value = structuredClone(match.value);
  const field = `${side}_score`;
  value[field] = Math.max(0, value[field] + delta);
  if (value[field] === match.value[field]) return;
  value.goals = value.goals || [];
  if (delta > 0) value.goals.push({ minute: value.minute, side });
  else {
    const last = value.goals.map((g) => g.side).lastIndexOf(side);
    if (last >= 0) value.goals.splice(last, 1);
  }
  try {
    await client.put(CACHE, key, value, { if_version: match.version });
  } catch (error) {
    if (error.code === "version_mismatch" && !retried) {
      const current = await client.get(CACHE, key);
      upsert(key, current.value, current.version, true);
      return changeScore(key, side, delta, true);
    }
    console.warn("pushgrid: could not change the score", error);
  }
}
