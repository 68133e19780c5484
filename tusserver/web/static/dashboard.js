// The admin dashboard: a live view of /admin/api/events (Server-Sent Events) plus the actions
// of the JSON API. No framework; the DOM is built from the page's <template> with textContent
// only, so no upload name or metadata can ever become markup. Authentication is the HttpOnly
// cookie the server set from ?token= (same-origin requests carry it; this script never sees it).

const api = document.body.dataset.api;
const rowsBody = document.getElementById("upload-rows");
const rowTemplate = document.getElementById("row-template");
const filter = document.getElementById("status-filter");
const loadMore = document.getElementById("load-more");
const empty = document.getElementById("empty");
const connection = document.getElementById("connection");
const announcer = document.getElementById("announcer");

const PAGE = 50;
const RECONNECT_MS = 3000;
const REFRESH_MS = 10000; // relative times ("expires in …") and idle uploads
const IDLE_SECONDS = 10; // no progress for this long: no speed shown (as the stats' in flight)
const GONE = new Set(["terminated", "expired"]);
const BUSY = new Set(["queued", "processing"]);

const rows = new Map(); // upload id -> {item, tr}
let source = null;
let reconnectTimer = null;
let nextCursor = null;
let loadedMore = false; // rows past the live first page came from "Load more"
let firstSnapshot = true;

// -- formatting ---------------------------------------------------------------------------

const UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];

function formatBytes(bytes) {
  if (bytes === null || bytes === undefined) return "unknown";
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < UNITS.length - 1) {
    value /= 1024;
    unit += 1;
  }
  const digits = unit === 0 || value >= 100 ? 0 : 1;
  return `${value.toFixed(digits)} ${UNITS[unit]}`;
}

function formatDuration(seconds) {
  if (seconds === null || seconds === undefined) return "";
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

function formatExpiry(epoch) {
  if (epoch === null || epoch === undefined) return "never";
  const left = epoch - Date.now() / 1000;
  return left <= 0 ? "passed" : `in ${formatDuration(left)}`;
}

function formatNumber(n) {
  return new Intl.NumberFormat().format(n);
}

function statusText(item) {
  return item.result && item.result !== item.status ? `${item.status} (${item.result})` : item.status;
}

function processingText(processing) {
  if (!processing) return "–";
  const parts = [processing.status];
  if (processing.status === "processing") parts.push(`${Math.round(processing.percent)} %`);
  if (processing.result) parts.push(processing.result);
  return parts.join(" · ");
}

function count(n, noun) {
  return `${formatNumber(n)} ${noun}${n === 1 ? "" : "s"}`;
}

function recordsText(processing) {
  if (!processing) return "";
  const parts = [count(processing.records, "record")];
  if (processing.error_count) parts.push(count(processing.error_count, "error"));
  if (processing.error) parts.push(processing.error);
  return parts.join(" · ");
}

// -- rows ---------------------------------------------------------------------------------

function field(tr, name) {
  return tr.querySelector(`[data-field="${name}"]`);
}

function label(item) {
  return item.name || item.id;
}

function fillRow(tr, item) {
  tr.dataset.uploadId = item.id;
  tr.dataset.status = item.status;
  field(tr, "name").textContent = label(item);
  field(tr, "type").textContent = item.type || "";
  field(tr, "id").textContent = item.name ? item.id : "";
  field(tr, "size").textContent = formatBytes(item.size);
  const progress = field(tr, "progress");
  if (item.percent === null) progress.removeAttribute("value");
  else progress.value = item.percent;
  progress.setAttribute("aria-label", `Upload progress of ${label(item)}`);
  const percent = item.percent === null ? "" : ` (${Math.floor(item.percent)} %)`;
  field(tr, "offset").textContent = `${formatBytes(item.offset)}${percent}`;
  const uploading = item.status === "uploading";
  const moving = uploading && Date.now() / 1000 - item.updated < IDLE_SECONDS;
  let speed = uploading ? "idle" : "–";
  if (moving && item.bytes_per_second) speed = `${formatBytes(item.bytes_per_second)}/s`;
  field(tr, "speed").textContent = speed;
  field(tr, "eta").textContent =
    moving && item.eta_seconds !== null ? `${formatDuration(item.eta_seconds)} left` : "";
  field(tr, "status").textContent = statusText(item);
  field(tr, "status").dataset.status = item.status;
  const expires = field(tr, "expires");
  expires.textContent = uploading ? formatExpiry(item.expires) : "–";
  if (item.expires) expires.dateTime = new Date(item.expires * 1000).toISOString();
  field(tr, "processing").textContent = processingText(item.processing);
  field(tr, "records").textContent = recordsText(item.processing);
  const gone = GONE.has(item.state);
  const reprocess = tr.querySelector('[data-action="reprocess"]');
  reprocess.hidden = gone || item.state !== "complete" || BUSY.has(item.status);
  reprocess.setAttribute("aria-label", `Reprocess ${label(item)}`);
  const terminate = tr.querySelector('[data-action="terminate"]');
  terminate.hidden = gone;
  terminate.setAttribute("aria-label", `Terminate ${label(item)}`);
}

function newRow(item) {
  const tr = rowTemplate.content.firstElementChild.cloneNode(true);
  tr.querySelector('[data-action="reprocess"]').addEventListener("click", () => reprocess(item.id));
  tr.querySelector('[data-action="terminate"]').addEventListener("click", () => terminate(item.id));
  return tr;
}

// Newest first, as the API lists them: (created, id) descending.
function newer(a, b) {
  if (a.created !== b.created) return a.created > b.created;
  return a.id > b.id;
}

function upsert(item, changes) {
  const known = rows.get(item.id);
  if (known) {
    if (known.item.status !== item.status) changes.push(`${label(item)}: ${statusText(item)}`);
    known.item = item;
    fillRow(known.tr, item);
  } else {
    const tr = newRow(item);
    fillRow(tr, item);
    rows.set(item.id, { item, tr });
    if (!firstSnapshot) changes.push(`new upload ${label(item)}: ${statusText(item)}`);
  }
}

function remove(id) {
  const known = rows.get(id);
  if (!known) return;
  known.tr.remove();
  rows.delete(id);
}

// Puts the rows in order, moving only those out of place (a moved row loses keyboard focus).
function order() {
  const sorted = [...rows.values()].sort((a, b) => (newer(a.item, b.item) ? -1 : 1));
  sorted.forEach(({ tr }, index) => {
    if (rowsBody.children[index] !== tr) rowsBody.insertBefore(tr, rowsBody.children[index] || null);
  });
  empty.hidden = rows.size > 0;
  loadMore.hidden = nextCursor === null;
}

function announce(messages) {
  if (messages.length === 0) return;
  const shown = messages.slice(0, 3);
  if (messages.length > shown.length) shown.push(`and ${messages.length - shown.length} more`);
  announcer.textContent = shown.join("; ");
}

// A snapshot holds the first page: rows it no longer lists that sort within that page left
// the filter (or were forgotten); rows past it came from "Load more" and stay.
function applySnapshot(view) {
  const changes = [];
  const listed = new Set(view.items.map((item) => item.id));
  const last = view.next === null ? null : view.items[view.items.length - 1];
  for (const [id, { item }] of rows) {
    if (!listed.has(id) && (last === null || !newer(last, item))) {
      remove(id);
      changes.push(`${label(item)} left this list`);
    }
  }
  view.items.forEach((item) => upsert(item, changes));
  if (!loadedMore) nextCursor = view.next;
  order();
  showStats(view.stats);
  if (!firstSnapshot) announce(changes);
  firstSnapshot = false;
}

function showStats(stats) {
  document.getElementById("total-stored").textContent = formatBytes(stats.bytes_stored);
  document.getElementById("total-free").textContent =
    stats.free_bytes === null ? "not reported" : formatBytes(stats.free_bytes);
  document.getElementById("total-in-flight").textContent = formatNumber(stats.in_flight);
  document.getElementById("total-failed").textContent = formatNumber(stats.failed_jobs);
  const states = Object.entries(stats.uploads).map(([state, n]) => `${state} ${formatNumber(n)}`);
  document.getElementById("total-states").textContent = states.join(" · ") || "none";
}

// -- live updates -------------------------------------------------------------------------

function query(extra = {}) {
  const params = new URLSearchParams(extra);
  if (filter.value) params.set("status", filter.value);
  const text = params.toString();
  return text ? `?${text}` : "";
}

function setConnection(text, state) {
  connection.textContent = text;
  connection.dataset.state = state;
}

function connect() {
  clearTimeout(reconnectTimer);
  if (source) source.close();
  source = new EventSource(`${api}events${query()}`);
  source.addEventListener("open", () => setConnection("Live", "live"));
  source.addEventListener("snapshot", (event) => applySnapshot(JSON.parse(event.data)));
  source.addEventListener("shutdown", () => reconnectLater("Server restarting; reconnecting…"));
  source.addEventListener("error", () => {
    if (source.readyState === EventSource.CLOSED) reconnectLater("Disconnected; retrying…");
    else setConnection("Reconnecting…", "waiting");
  });
}

// The browser gives up on a stream that answered an error; find out why, then try again.
async function reconnectLater(text) {
  source.close();
  setConnection(text, "waiting");
  try {
    const response = await fetch(`${api}stats`, { credentials: "same-origin" });
    if (response.status === 401) {
      // no cookie, or one older than its 7 days
      setConnection("Not signed in: open this page again with ?token=<admin token>.", "error");
      return;
    }
  } catch {
    // the server is away: retry below
  }
  reconnectTimer = setTimeout(connect, RECONNECT_MS);
}

function restart() {
  rows.forEach(({ tr }) => tr.remove());
  rows.clear();
  nextCursor = null;
  loadedMore = false;
  firstSnapshot = true;
  empty.hidden = true;
  loadMore.hidden = true;
  setConnection("Connecting…", "waiting");
  connect();
}

// -- actions ------------------------------------------------------------------------------

async function call(method, path) {
  const response = await fetch(`${api}${path}`, { method, credentials: "same-origin" });
  if (response.ok) return response.status === 204 ? null : response.json();
  let message = `${response.status} ${response.statusText}`;
  try {
    message = (await response.json()).error || message;
  } catch {
    // not JSON: keep the status line
  }
  throw new Error(message);
}

async function terminate(id) {
  const known = rows.get(id);
  const name = known ? label(known.item) : id;
  if (!window.confirm(`Terminate upload ${name}? Its data is deleted.`)) return;
  try {
    await call("DELETE", `uploads/${encodeURIComponent(id)}`);
    announce([`${name} terminated`]);
  } catch (error) {
    announce([`Terminating ${name} failed: ${error.message}`]);
  }
}

async function reprocess(id) {
  const known = rows.get(id);
  const name = known ? label(known.item) : id;
  try {
    await call("POST", `uploads/${encodeURIComponent(id)}/reprocess`);
    announce([`Processing of ${name} queued again`]);
  } catch (error) {
    announce([`Reprocessing ${name} failed: ${error.message}`]);
  }
}

async function more() {
  loadMore.disabled = true;
  try {
    const page = await call("GET", `uploads${query({ limit: PAGE, cursor: nextCursor })}`);
    const changes = [];
    page.items.forEach((item) => upsert(item, changes));
    loadedMore = true;
    nextCursor = page.next;
    order();
    announce([`${page.items.length} more uploads shown`]);
  } catch (error) {
    announce([`Loading more failed: ${error.message}`]);
  } finally {
    loadMore.disabled = false;
  }
}

filter.addEventListener("change", restart);
document.getElementById("filter-form").addEventListener("submit", (event) => {
  event.preventDefault();
  restart();
});
loadMore.addEventListener("click", more);
setInterval(() => rows.forEach(({ item, tr }) => fillRow(tr, item)), REFRESH_MS);
connect();
