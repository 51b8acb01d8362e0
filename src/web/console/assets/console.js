// The console's page: renders each `farm` event of /api/events and sends the operator's
// commands with the session's CSRF token. No framework: the page is small.
"use strict";

const csrf = document.querySelector('meta[name="csrf-token"]').content;
const COLOURS = 8;
const ACTIONS = ["drain", "stop", "start", "restart"];
// Each node's recent samples where its counters changed, for the packet rates.
const previous = new Map();

function element(tag, attributes, text) {
  const made = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) {
    made.setAttribute(name, value);
  }
  if (text !== undefined) {
    made.textContent = text;
  }
  return made;
}

function clock(ms) {
  return new Date(ms).toLocaleTimeString();
}

function showReply(text, ok) {
  const reply = document.getElementById("reply");
  reply.textContent = text;
  reply.className = ok ? "" : "refused";
}

async function post(path) {
  const answer = await fetch(path, {
    method: "POST",
    headers: { "X-CSRF-Token": csrf },
    credentials: "same-origin",
  });
  if (answer.status === 401) {
    window.location.assign("/login");
    return null;
  }
  let body;
  try {
    body = await answer.json();
  } catch (error) {
    body = { ok: false, text: answer.status + " " + answer.statusText };
  }
  return body;
}

async function command(path, question) {
  if (!window.confirm(question)) {
    return;
  }
  showReply("asked: " + question.replace(/\?$/, "") + "…", true);
  try {
    const body = await post(path);
    if (body) {
      showReply(body.text, body.ok);
    }
  } catch (error) {
    showReply("no answer from the console: " + error, false);
  }
}

// The counters come from each node's membership snapshot, refreshed about once a second, so
// successive samples may show the same counts: rates are taken between the samples where the
// counts changed, over the last RATE_WINDOW_MS.
const RATE_WINDOW_MS = 5000;
// Counts unchanged for this long mean no traffic.
const STILL_MS = 3000;

function rate(name, at_ms, traffic) {
  const changes = previous.get(name) || [];
  previous.set(name, changes);
  const last = changes[changes.length - 1];
  if (!last || last.traffic.accepted.packets !== traffic.accepted.packets ||
      last.traffic.dropped.packets !== traffic.dropped.packets) {
    changes.push({ at_ms, traffic });
  }
  while (changes.length > 2 && changes[1].at_ms <= at_ms - RATE_WINDOW_MS) {
    changes.shift();
  }
  const newest = changes[changes.length - 1];
  if (changes.length < 2) {
    return ["…", "…"];
  }
  if (at_ms - newest.at_ms > STILL_MS) {
    return ["0 pkt/s", "0 pkt/s"];
  }
  const oldest = changes[0];
  const seconds = (newest.at_ms - oldest.at_ms) / 1000;
  const per = (now, then) => Math.max(0, Math.round((now - then) / seconds)) + " pkt/s";
  return [
    per(newest.traffic.accepted.packets, oldest.traffic.accepted.packets),
    per(newest.traffic.dropped.packets, oldest.traffic.dropped.packets),
  ];
}

// The cells of a node's row, by class, in order.
const CELLS = ["name", "state", "weight", "buckets", "accepted", "dropped", "checks", "restarts", "drain"];
const NUMERIC = new Set(["weight", "buckets", "accepted", "dropped", "restarts"]);

// The row of node `name`, made with its buttons the first time. Rows are kept and only their
// text changes, so that an update never replaces a button under the operator's pointer.
function rowOf(body, name) {
  for (const row of body.rows) {
    if (row.dataset.node === name) {
      return row;
    }
  }
  const row = element("tr", { "data-node": name });
  for (const cell of CELLS) {
    row.append(element("td", { class: NUMERIC.has(cell) ? "num " + cell : cell }));
  }
  row.querySelector("td.name").textContent = name;
  const actions = element("td", { class: "actions" });
  for (const action of ACTIONS) {
    const button = element("button", { type: "button", "data-action": action }, action);
    button.addEventListener("click", () =>
      command("/api/nodes/" + encodeURIComponent(name) + "/" + action, action + " node " + name + "?"));
    actions.append(button);
  }
  row.append(actions);
  body.append(row);
  return row;
}

function setCell(row, cell, text, title) {
  const td = row.querySelector("td." + cell);
  if (td.textContent !== text) {
    td.textContent = text;
  }
  td.title = title || "";
}

function setChecks(row, status) {
  const td = row.querySelector("td.checks");
  const lines = status.checks.map((check) => {
    const last = check.last;
    let text = check.name + " " + check.health;
    if (last) {
      text += last.ok ? " (ok, " + last.took_ms + " ms)" : " (" + (last.error || "failed") + ")";
    }
    const kind = check.health === "healthy" ? "ok" : check.health === "failed" ? "failed" : "unknown";
    return [kind, text];
  });
  const key = JSON.stringify(lines);
  if (td.dataset.key === key) {
    return;
  }
  td.dataset.key = key;
  td.replaceChildren(...lines.map(([kind, text]) => element("div", { class: "check-" + kind }, text)));
  if (!lines.length) {
    td.textContent = "none";
  }
}

function updateRow(row, farm, index, owned, total) {
  const node = farm.report.nodes[index];
  const state = farm.states[index];
  row.className = state.replace(/ /g, "-");
  const status = node.status;
  setCell(row, "state", state, node.error || (status && status.reason) || "");
  setCell(row, "weight", String(farm.weights[index]));
  const share = total ? Math.round((100 * owned) / total) : 0;
  setCell(row, "buckets", owned + " (" + share + " %)");
  if (!status) {
    previous.delete(node.name);
    for (const cell of ["accepted", "dropped", "checks", "restarts", "drain"]) {
      setCell(row, cell, "—");
    }
    row.querySelector("td.checks").dataset.key = "";
    return;
  }
  const [accepted, dropped] = rate(node.name, farm.report.at_ms, status.membership.traffic);
  setCell(row, "accepted", accepted);
  setCell(row, "dropped", dropped);
  setChecks(row, status);
  const restarts = status.restarts;
  setCell(row, "restarts",
    restarts.total + " (" + restarts.recent + "/" + restarts.limit + " in " + restarts.within_s + " s)");
  const drain = status.membership.drain;
  const connections = drain && drain.connections !== null ? ", " + drain.connections + " connections" : "";
  setCell(row, "drain", drain ? drain.views + " views" + connections : "—");
}

function renderBuckets(map) {
  const grid = document.getElementById("buckets");
  const draining = new Set(map.draining);
  while (grid.children.length > map.owners.length) {
    grid.lastChild.remove();
  }
  while (grid.children.length < map.owners.length) {
    grid.append(element("div", { class: "bucket" }));
  }
  map.owners.forEach((owner, bucket) => {
    const cell = grid.children[bucket];
    const name = owner === null ? "" : map.nodes[owner];
    let classes = "bucket";
    if (owner !== null) {
      classes += " owner-" + (owner % COLOURS);
    }
    if (draining.has(bucket)) {
      classes += " draining";
    }
    if (cell.className !== classes) {
      cell.className = classes;
    }
    if (cell.dataset.owner !== name) {
      cell.dataset.owner = name;
      cell.title = "bucket " + bucket + ": " + (name || "no owner");
    }
  });
  const legend = document.getElementById("bucket-legend");
  legend.replaceChildren();
  map.nodes.forEach((name, index) => {
    const item = element("li", {}, name);
    item.prepend(element("span", { class: "swatch owner-" + (index % COLOURS) }));
    legend.append(item);
  });
  const unowned = element("li", {}, "no owner");
  unowned.prepend(element("span", { class: "swatch" }));
  legend.append(unowned);
  const drained = element("li", {},
    "striped: still draining (a node that owned it in an earlier view serves its old connections there)");
  drained.prepend(element("span", { class: "swatch bucket draining" }));
  legend.append(drained);
}

function renderTimeline(events) {
  const list = document.getElementById("timeline");
  list.replaceChildren();
  for (const event of events) {
    const item = element("li", { class: "event " + event.kind });
    item.append(element("time", {}, clock(event.at_ms)));
    item.append(element("span", { class: "kind" }, event.kind.replace(/_/g, " ")));
    item.append(document.createTextNode(event.node + ": " + event.text));
    list.append(item);
  }
  if (!events.length) {
    list.append(element("li", { class: "empty" }, "nothing has happened yet"));
  }
}

function render(farm) {
  const total = farm.buckets.owners.length;
  const owned = new Map();
  for (const owner of farm.buckets.owners) {
    if (owner !== null) {
      const name = farm.buckets.nodes[owner];
      owned.set(name, (owned.get(name) || 0) + 1);
    }
  }
  const body = document.querySelector("#farm tbody");
  const reported = new Set();
  farm.report.nodes.forEach((node, index) => {
    reported.add(node.name);
    updateRow(rowOf(body, node.name), farm, index, owned.get(node.name) || 0, total);
  });
  for (const row of [...body.rows]) {
    if (!reported.has(row.dataset.node)) {
      row.remove();
    }
  }
  const named = farm.report.nodes.find((node) => node.status);
  document.getElementById("farm-name").textContent = named ? "farm " + named.status.farm : "";
  renderBuckets(farm.buckets);
  renderTimeline(farm.timeline);
  const updated = document.getElementById("updated");
  updated.textContent = clock(farm.report.at_ms);
  updated.dateTime = new Date(farm.report.at_ms).toISOString();
}

async function loadOnce() {
  const answer = await fetch("/api/farm", { credentials: "same-origin" });
  if (answer.status === 401) {
    window.location.assign("/login");
    return;
  }
  if (answer.ok) {
    render(await answer.json());
  }
}

function listen() {
  const source = new EventSource("/api/events");
  const connection = document.getElementById("connection");
  source.addEventListener("farm", (message) => {
    connection.textContent = "";
    connection.className = "";
    render(JSON.parse(message.data));
  });
  source.addEventListener("error", () => {
    connection.textContent = "(connection lost: retrying)";
    connection.className = "lost";
    if (source.readyState === EventSource.CLOSED) {
      // Refused, not merely cut: most likely the session ended.
      loadOnce().then(() => setTimeout(listen, 2000));
    }
  });
}

async function whois(event) {
  event.preventDefault();
  const query = new URLSearchParams({
    client: document.getElementById("whois-client").value,
    proto: document.getElementById("whois-proto").value,
  });
  const port = document.getElementById("whois-port").value;
  if (port) {
    query.set("port", port);
  }
  const answer = await fetch("/api/whois?" + query, { credentials: "same-origin" });
  if (answer.status === 401) {
    window.location.assign("/login");
    return;
  }
  const body = await answer.json();
  document.getElementById("whois-answer").textContent = body.text;
}

async function logout() {
  await post("/logout");
  window.location.assign("/login");
}

document.getElementById("whois").addEventListener("submit", whois);
document.getElementById("logout").addEventListener("click", logout);
document.getElementById("roll-restart").addEventListener("click", () =>
  command("/api/roll/restart", "restart every node of the farm, one after another?"));
loadOnce();
listen();
