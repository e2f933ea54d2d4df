// Kiln web view: the stack list and one stack's resource graph and events, live.
//
// Plain ES module, no build step and no dependencies. Everything on the page is built with DOM
// calls and textContent (never innerHTML), so names and reasons from the API cannot inject
// markup. Routes are URL hashes: `#/` (the stacks) and `#/stacks/NAME` (one stack).
//
// Auth: a token given once in the URL (`?token=...` or `#token=...`, also
// `#/stacks/NAME?token=...`) is moved to sessionStorage and removed from the address bar; it
// goes out as `Authorization: Bearer` on fetch and as `access_token` on the EventSource (which
// cannot set headers). A 401 shows a small token form.

const TOKEN_KEY = 'kiln.token';
const LIST_REFRESH_MS = 2000;
const POLL_MS = 2000;
const STREAM_RETRY_MS = 30000;
const MAX_TIMELINE = 1000;
const EVENTS_PAGE = 500;
const SVG_NS = 'http://www.w3.org/2000/svg';

// Node box and spacing of the graph, in SVG units (px at zoom 1).
const NODE_W = 176;
const NODE_H = 46;
const GAP_X = 56;
const GAP_Y = 14;
const PAD = 20;

const $ = (id) => document.getElementById(id);

const state = {
  token: null,
  // Bumped on every route change: async work of an older route sees it and stops.
  gen: 0,
  timer: null,
  // The stack view's state (see showStack).
  s: null,
};

// ---------------------------------------------------------------------------------------------
// Token and routes

function takeTokenFromUrl() {
  const url = new URL(location.href);
  let token = null;
  if (url.searchParams.has('token')) {
    token = url.searchParams.get('token');
    url.searchParams.delete('token');
  }
  let hash = url.hash.replace(/^#/, '');
  let path = hash;
  let query = '';
  const q = hash.indexOf('?');
  if (q >= 0) {
    path = hash.slice(0, q);
    query = hash.slice(q + 1);
  } else if (!hash.startsWith('/') && hash.includes('=')) {
    path = '';
    query = hash;
  }
  const params = new URLSearchParams(query);
  if (params.has('token')) {
    token = params.get('token');
    params.delete('token');
    const rest = params.toString();
    hash = path + (rest ? '?' + rest : '');
  }
  if (token !== null) {
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    history.replaceState(null, '', url.pathname + url.search + (hash ? '#' + hash : ''));
  }
}

function parseRoute() {
  const hash = location.hash.replace(/^#/, '').split('?')[0];
  const m = hash.match(/^\/stacks\/([^/]+)\/?$/);
  if (m) {
    let name;
    try {
      name = decodeURIComponent(m[1]);
    } catch {
      name = m[1];
    }
    return { view: 'stack', name };
  }
  return { view: 'list' };
}

function stackHref(name) {
  return '#/stacks/' + encodeURIComponent(name);
}

function route() {
  state.gen += 1;
  teardown();
  clearBanner();
  const r = parseRoute();
  if (r.view === 'stack') showStack(r.name, state.gen);
  else showList(state.gen);
}

function teardown() {
  clearTimeout(state.timer);
  state.timer = null;
  const s = state.s;
  if (s) {
    if (s.es) s.es.close();
    clearTimeout(s.pollTimer);
    clearTimeout(s.retryTimer);
    clearTimeout(s.reloadTimer);
    state.s = null;
  }
  setConn('none');
  document.body.removeAttribute('data-ready');
  document.body.removeAttribute('data-stream');
}

// ---------------------------------------------------------------------------------------------
// The API

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function api(path) {
  const headers = { Accept: 'application/json' };
  if (state.token) headers.Authorization = 'Bearer ' + state.token;
  let res;
  try {
    res = await fetch(path, { headers, cache: 'no-store' });
  } catch (e) {
    throw new ApiError(0, 'unreachable', 'cannot reach the API (' + e.message + ')');
  }
  const text = await res.text();
  let body = null;
  if (text) {
    try {
      body = JSON.parse(text);
    } catch {
      body = null;
    }
  }
  if (!res.ok) {
    const err = body && body.error;
    const e = new ApiError(
      res.status,
      (err && err.code) || 'http_' + res.status,
      (err && err.message) || text.slice(0, 300) || res.statusText,
    );
    if (res.status === 401) showTokenForm(e.message);
    throw e;
  }
  return body;
}

function stackPath(name, rest = '') {
  return '/v1/stacks/' + encodeURIComponent(name) + rest;
}

// ---------------------------------------------------------------------------------------------
// Page furniture: banner, token form, breadcrumbs, connection indicator

function showError(e) {
  if (e.status === 401) return; // the token form says it
  const banner = $('banner');
  banner.replaceChildren();
  const code = document.createElement('strong');
  code.textContent = e.code || 'error';
  banner.append(code, ' ', e.message || String(e));
  banner.hidden = false;
}

function clearBanner() {
  $('banner').hidden = true;
}

function showTokenForm(why) {
  $('token-why').textContent = why
    ? why + ' — enter a bearer token for this tab.'
    : 'Enter a bearer token for this tab.';
  $('token-form').hidden = false;
  $('token-input').focus();
}

function setupTokenForm() {
  $('token-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const value = $('token-input').value.trim();
    if (!value) return;
    state.token = value;
    sessionStorage.setItem(TOKEN_KEY, value);
    $('token-input').value = '';
    $('token-form').hidden = true;
    route();
  });
  $('token-cancel').addEventListener('click', () => {
    $('token-form').hidden = true;
  });
  $('token-button').addEventListener('click', () => showTokenForm(''));
}

function setCrumbs(name) {
  const nav = $('crumbs');
  nav.replaceChildren();
  const all = document.createElement('a');
  all.href = '#/';
  all.textContent = 'Stacks';
  nav.append(all);
  if (name) {
    const sep = document.createElement('span');
    sep.className = 'sep';
    sep.textContent = '/';
    const here = document.createElement('span');
    here.textContent = name;
    nav.append(sep, here);
  }
}

const CONN_TEXT = {
  stream: 'live',
  reconnecting: 'reconnecting…',
  poll: 'polling',
};

function setConn(mode) {
  const el = $('conn');
  el.dataset.connection = mode;
  el.textContent = CONN_TEXT[mode] || '';
  el.hidden = !CONN_TEXT[mode];
  el.title =
    mode === 'stream'
      ? 'Receiving events as they happen'
      : mode === 'poll'
        ? 'The event stream is unavailable: asking every few seconds'
        : '';
}

function setView(view) {
  document.body.dataset.view = view;
  $('list-view').hidden = view !== 'list';
  $('stack-view').hidden = view !== 'stack';
}

// ---------------------------------------------------------------------------------------------
// Status and time formatting

/** The CSS class of an action/status pair. */
function statusClass(action, status) {
  if (!status) return 'status-init';
  if (status === 'FAILED') return 'status-failed';
  if (status === 'IN_PROGRESS') return 'status-in-progress';
  if (action === 'INIT') return 'status-init';
  if (action === 'DELETE' && status === 'COMPLETE') return 'status-deleted';
  return 'status-complete';
}

function actionStatus(action, status) {
  return (action || 'INIT') + '_' + (status || 'COMPLETE');
}

function badge(action, status) {
  const b = document.createElement('span');
  b.className = 'badge ' + statusClass(action, status);
  b.textContent = actionStatus(action, status);
  return b;
}

const pad = (n, w = 2) => String(n).padStart(w, '0');

function fmtDateTime(ms) {
  if (typeof ms !== 'number') return '';
  const d = new Date(ms);
  return (
    `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`
  );
}

function fmtTime(ms) {
  if (typeof ms !== 'number') return '';
  const d = new Date(ms);
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}

function isoTitle(ms) {
  return typeof ms === 'number' ? new Date(ms).toISOString() : '';
}

// ---------------------------------------------------------------------------------------------
// The stack list

function showList(gen) {
  setView('list');
  setCrumbs(null);
  document.title = 'Kiln';
  const refresh = async () => {
    try {
      const body = await api('/v1/stacks');
      if (gen !== state.gen) return;
      renderStacks((body && body.stacks) || []);
      clearBanner();
      document.body.dataset.ready = '1';
    } catch (e) {
      if (gen !== state.gen) return;
      showError(e);
      if (e.status === 401) return; // until a token is given
    }
    state.timer = setTimeout(refresh, LIST_REFRESH_MS);
  };
  refresh();
}

function renderStacks(stacks) {
  const rows = stacks
    .slice()
    .sort((a, b) => (a.project + '/' + a.name).localeCompare(b.project + '/' + b.name))
    .map((st) => {
      const tr = document.createElement('tr');
      tr.dataset.stack = st.name;
      tr.dataset.status = actionStatus(st.action, st.status);
      tr.className = 'row';
      const name = document.createElement('td');
      const a = document.createElement('a');
      a.href = stackHref(st.name);
      a.textContent = st.name;
      name.append(a);
      const status = document.createElement('td');
      status.append(badge(st.action, st.status));
      if (st.status_reason) {
        const why = document.createElement('span');
        why.className = 'reason-inline';
        why.textContent = st.status_reason;
        status.append(why);
      }
      const updated = document.createElement('td');
      updated.className = 'time';
      updated.textContent = fmtDateTime(st.updated_at);
      updated.title = isoTitle(st.updated_at);
      const project = document.createElement('td');
      project.textContent = st.project || '';
      tr.append(name, status, updated, project);
      tr.addEventListener('click', (ev) => {
        if (ev.target.closest('a')) return;
        location.hash = stackHref(st.name);
      });
      return tr;
    });
  $('stack-rows').replaceChildren(...rows);
  $('no-stacks').hidden = stacks.length > 0;
}

// ---------------------------------------------------------------------------------------------
// One stack

async function showStack(name, gen) {
  setView('stack');
  setCrumbs(name);
  const s = {
    name,
    gen,
    stack: null,
    traversal: undefined,
    // name -> { node, el, out: [edge elements], index }
    nodes: new Map(),
    lastEventId: 0,
    eventCount: 0,
    filter: null,
    es: null,
    streamErrors: 0,
    pollTimer: null,
    retryTimer: null,
    reloadTimer: null,
    // Events handled while a graph reload is in flight (re-applied to the new graph).
    reloading: null,
    scale: 1,
    // Set once the user zooms: a new graph then keeps the user's scale.
    zoomed: false,
    size: { w: 0, h: 0 },
  };
  state.s = s;
  $('stack-name').textContent = name;
  $('stack-status').textContent = '';
  $('stack-status').className = 'badge';
  $('stack-meta').textContent = '';
  $('stack-reason').textContent = '';
  $('graph').replaceChildren();
  $('timeline').replaceChildren();
  $('node-count').textContent = '';
  $('event-count').textContent = '';
  try {
    await loadGraph(s, true);
    if (!alive(s)) return;
    await loadEvents(s, false);
    if (!alive(s)) return;
  } catch (e) {
    if (!alive(s)) return;
    showError(e);
    // A 401 waits for the token form, a 404 is the answer; anything else: try again.
    if (e.status !== 401 && e.status !== 404) {
      s.retryTimer = setTimeout(() => alive(s) && showStack(name, gen), POLL_MS * 2);
    }
    return;
  }
  document.body.dataset.ready = '1';
  startStream(s);
}

function alive(s) {
  return state.s === s && s.gen === state.gen;
}

async function loadGraph(s, first) {
  const body = await api(stackPath(s.name, '/graph'));
  if (!alive(s)) return;
  const replay = s.reloading || [];
  s.reloading = null;
  renderHeader(s, body.stack);
  s.traversal = body.stack && body.stack.traversal;
  renderGraph(s, body.nodes || [], first);
  for (const ev of replay) applyToNode(s, ev, false);
}

function scheduleGraphReload(s) {
  if (s.reloadTimer || s.reloading) return;
  s.reloadTimer = setTimeout(async () => {
    s.reloadTimer = null;
    s.reloading = [];
    try {
      await loadGraph(s, false);
    } catch (e) {
      s.reloading = null;
      if (alive(s)) showError(e);
    }
  }, 300);
}

/** Fetches the events after the last one seen, page by page, oldest first. */
async function loadEvents(s, live) {
  for (let page = 0; page < 1000; page++) {
    const body = await api(stackPath(s.name, `/events?after=${s.lastEventId}&limit=${EVENTS_PAGE}`));
    if (!alive(s)) return;
    const events = ((body && body.events) || []).slice().sort((a, b) => a.id - b.id);
    const before = s.lastEventId;
    for (const ev of events) handleEvent(s, ev, live);
    if (body.next === null || body.next === undefined || s.lastEventId === before) return;
  }
}

function renderHeader(s, stack) {
  if (!stack) return;
  s.stack = stack;
  const st = $('stack-status');
  st.className = 'badge ' + statusClass(stack.action, stack.status);
  st.textContent = actionStatus(stack.action, stack.status);
  st.dataset.status = st.textContent;
  const meta = [];
  if (stack.project) meta.push('project ' + stack.project);
  if (typeof stack.traversal === 'number') meta.push('traversal ' + stack.traversal);
  if (stack.updated_at) meta.push('updated ' + fmtDateTime(stack.updated_at));
  if (stack.on_failure) meta.push('on failure: ' + stack.on_failure);
  if (stack.deadline_at) meta.push('deadline ' + fmtDateTime(stack.deadline_at));
  if (stack.cancel_requested_at) meta.push('cancel requested ' + fmtTime(stack.cancel_requested_at));
  $('stack-meta').textContent = meta.join(' · ');
  $('stack-reason').textContent = stack.status_reason || '';
  document.title = 'Kiln — ' + (stack.name || s.name);
}

/** A `stack` message (or the stack from a poll): the header, and a new graph on a new traversal. */
function handleStack(s, stack) {
  if (!stack) return;
  const changed = s.traversal !== undefined && stack.traversal !== s.traversal;
  renderHeader(s, stack);
  if (changed) {
    s.traversal = stack.traversal;
    scheduleGraphReload(s);
  }
}

function handleEvent(s, ev, live) {
  if (typeof ev.id !== 'number' || ev.id <= s.lastEventId) return; // seen already
  s.lastEventId = ev.id;
  addToTimeline(s, ev);
  if (s.reloading) s.reloading.push(ev);
  if (ev.resource) {
    if (!applyToNode(s, ev, live) && live) scheduleGraphReload(s);
  } else if (s.stack) {
    // The stack's own event: the header follows at once (a `stack` message may come too).
    renderHeader(s, {
      ...s.stack,
      action: ev.action,
      status: ev.status,
      status_reason: ev.reason,
    });
  }
}

function applyToNode(s, ev, live) {
  const n = s.nodes.get(ev.resource);
  if (!n) return false;
  n.node.action = ev.action;
  n.node.status = ev.status;
  n.node.status_reason = ev.reason;
  paintNode(n);
  if (live) {
    n.el.classList.remove('flash');
    // Restart the flash animation (reading a layout property forces a reflow).
    void n.el.getBoundingClientRect();
    n.el.classList.add('flash');
  }
  return true;
}

// --- live updates ----------------------------------------------------------------------------

function startStream(s) {
  if (!alive(s) || typeof EventSource === 'undefined') {
    startPolling(s);
    return;
  }
  let url = stackPath(s.name, '/events/stream?after=' + s.lastEventId);
  if (state.token) url += '&access_token=' + encodeURIComponent(state.token);
  const es = new EventSource(url);
  s.es = es;
  s.streamErrors = 0;
  es.addEventListener('open', () => {
    if (!alive(s) || s.es !== es) return;
    s.streamErrors = 0;
    stopPolling(s);
    setConn('stream');
    document.body.dataset.stream = 'open';
  });
  es.addEventListener('event', (m) => {
    if (!alive(s) || s.es !== es) return;
    s.streamErrors = 0;
    clearBanner();
    const ev = parse(m.data);
    if (ev) handleEvent(s, ev, true);
  });
  es.addEventListener('stack', (m) => {
    if (!alive(s) || s.es !== es) return;
    const d = parse(m.data);
    if (d) handleStack(s, d.stack || d);
  });
  es.addEventListener('stream_error', (m) => {
    // The server could not read the database (say, a hiccup); the stream carries on.
    if (!alive(s) || s.es !== es) return;
    const d = parse(m.data);
    const err = d && d.error;
    showError(new ApiError(0, (err && err.code) || 'stream', (err && err.message) || m.data));
    if (err && err.code === 'not_found') {
      // The stack is gone: nothing more will come.
      es.close();
      s.es = null;
      setConn('none');
    }
  });
  es.addEventListener('error', () => {
    // EventSource's own connection error.
    if (!alive(s) || s.es !== es) return;
    document.body.dataset.stream = 'error';
    s.streamErrors += 1;
    // CLOSED: the server refused the stream (not 200, or not an event stream): no retry
    // from the browser. Repeated errors: the stream keeps dropping. Either way, poll.
    if (es.readyState === EventSource.CLOSED || s.streamErrors >= 3) {
      es.close();
      s.es = null;
      startPolling(s);
      s.retryTimer = setTimeout(() => {
        if (alive(s) && !s.es) startStream(s);
      }, STREAM_RETRY_MS);
    } else {
      setConn('reconnecting');
    }
  });
}

function parse(text) {
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

function startPolling(s) {
  if (!alive(s) || s.pollTimer) return;
  setConn('poll');
  const tick = async () => {
    try {
      const body = await api(stackPath(s.name, '?outputs=false'));
      if (!alive(s)) return;
      handleStack(s, body.stack);
      await loadEvents(s, true);
      if (!alive(s)) return;
      clearBanner();
    } catch (e) {
      if (!alive(s)) return;
      showError(e);
      if (e.status === 401) {
        s.pollTimer = null;
        return;
      }
    }
    if (s.pollTimer) s.pollTimer = setTimeout(tick, POLL_MS);
  };
  s.pollTimer = setTimeout(tick, 0);
}

function stopPolling(s) {
  clearTimeout(s.pollTimer);
  s.pollTimer = null;
}

// --- timeline --------------------------------------------------------------------------------

function addToTimeline(s, ev) {
  const li = document.createElement('li');
  li.className = 'event ' + statusClass(ev.action, ev.status);
  li.dataset.eventId = String(ev.id);
  li.dataset.resource = ev.resource || '';
  li.dataset.status = actionStatus(ev.action, ev.status);
  if (s.filter !== null && (ev.resource || '') !== s.filter) li.hidden = true;
  const time = document.createElement('time');
  time.textContent = fmtTime(ev.at);
  time.title = isoTitle(ev.at);
  if (typeof ev.at === 'number') time.dateTime = new Date(ev.at).toISOString();
  const res = document.createElement('span');
  res.className = ev.resource ? 'res' : 'res stack';
  res.textContent = ev.resource || 'stack';
  const line = document.createElement('div');
  line.className = 'line';
  line.append(time, res, badge(ev.action, ev.status));
  li.append(line);
  if (ev.reason) {
    const why = document.createElement('div');
    why.className = 'why';
    why.textContent = ev.reason;
    li.append(why);
  }
  if (ev.engine) li.title = 'engine ' + ev.engine;
  const list = $('timeline');
  list.insertBefore(li, list.firstChild); // newest first
  while (list.childElementCount > MAX_TIMELINE) list.lastElementChild.remove();
  s.eventCount += 1;
  $('event-count').textContent = String(s.eventCount);
}

function setFilter(s, name) {
  s.filter = s.filter === name ? null : name;
  for (const li of $('timeline').children) {
    li.hidden = s.filter !== null && li.dataset.resource !== s.filter;
  }
  for (const [n, entry] of s.nodes) entry.el.classList.toggle('selected', n === s.filter);
  $('timeline').classList.toggle('filtered', s.filter !== null);
}

// --- the graph -------------------------------------------------------------------------------

/**
 * Layered layout of a DAG (after Sugiyama): a node's layer is the longest path to it from a
 * root; an edge spanning several layers gets a thin "dummy" slot in each layer it crosses, so it
 * runs between the boxes instead of through them; within a layer, a few barycentre sweeps (down
 * by parents, up by children) reduce crossings. Layers are columns, left to right.
 *
 * Returns the box of each node (by index), each edge as a polyline of points from the
 * dependency to the dependent, and the drawing's size.
 */
function layout(nodes) {
  const n = nodes.length;
  const index = new Map(nodes.map((node, i) => [node.name, i]));
  const parents = nodes.map((node, i) => [
    ...new Set(
      (node.depends_on || []).map((d) => index.get(d)).filter((p) => p !== undefined && p !== i),
    ),
  ]);
  const children = nodes.map(() => []);
  parents.forEach((ps, i) => ps.forEach((p) => children[p].push(i)));

  // Longest path from the roots (Kahn's order).
  const indegree = parents.map((ps) => ps.length);
  const layerOf = new Array(n).fill(0);
  const order = [];
  for (let i = 0; i < n; i++) if (indegree[i] === 0) order.push(i);
  for (let h = 0; h < order.length; h++) {
    const u = order[h];
    for (const c of children[u]) {
      layerOf[c] = Math.max(layerOf[c], layerOf[u] + 1);
      if (--indegree[c] === 0) order.push(c);
    }
  }
  if (order.length < n) {
    // A cycle (the API should never send one): its nodes go in a last layer.
    const last = n ? Math.max(0, ...layerOf) + 1 : 0;
    for (let i = 0; i < n; i++) if (indegree[i] > 0) layerOf[i] = last;
  }
  const layerCount = n ? Math.max(...layerOf) + 1 : 0;

  // Items 0..n-1 are the nodes, the rest dummies; up/down are item adjacency between layers.
  const layerOfItem = layerOf.slice();
  const up = nodes.map(() => []);
  const down = nodes.map(() => []);
  const edges = [];
  parents.forEach((ps, i) => {
    for (const p of ps) {
      const chain = [p];
      if (layerOf[p] < layerOf[i]) {
        for (let l = layerOf[p] + 1; l < layerOf[i]; l++) {
          const d = layerOfItem.length;
          layerOfItem.push(l);
          up.push([]);
          down.push([]);
          chain.push(d);
        }
      }
      chain.push(i);
      for (let k = 1; k < chain.length; k++) {
        up[chain[k]].push(chain[k - 1]);
        down[chain[k - 1]].push(chain[k]);
      }
      edges.push({ from: p, to: i, chain });
    }
  });
  const items = layerOfItem.length;
  const layers = Array.from({ length: layerCount }, () => []);
  for (let v = 0; v < items; v++) layers[layerOfItem[v]].push(v);

  // Vertical centre of each item; each layer is centred on 0.
  const DUMMY_H = 6;
  const size = (v) => (v < n ? NODE_H : DUMMY_H);
  const y = new Array(items).fill(0);
  const place = (layer) => {
    let total = 0;
    layer.forEach((v, k) => (total += size(v) + (k ? GAP_Y : 0)));
    let at = -total / 2;
    for (const v of layer) {
      y[v] = at + size(v) / 2;
      at += size(v) + GAP_Y;
    }
  };
  layers.forEach(place);
  const sortBy = (layer, neighbours) => {
    const key = new Map();
    for (const v of layer) {
      const ns = neighbours[v];
      key.set(v, ns.length ? ns.reduce((sum, u) => sum + y[u], 0) / ns.length : y[v]);
    }
    layer.sort((a, b) => key.get(a) - key.get(b) || y[a] - y[b]);
    place(layer);
  };
  for (let sweep = 0; sweep < 4; sweep++) {
    for (let l = 1; l < layerCount; l++) sortBy(layers[l], up);
    for (let l = layerCount - 2; l >= 0; l--) sortBy(layers[l], down);
  }
  for (let l = 1; l < layerCount; l++) sortBy(layers[l], up);

  let top = 0;
  let bottom = 0;
  for (let v = 0; v < items; v++) {
    top = Math.min(top, y[v] - size(v) / 2);
    bottom = Math.max(bottom, y[v] + size(v) / 2);
  }
  const height = PAD * 2 + Math.max(NODE_H, bottom - top);
  const width = PAD * 2 + Math.max(1, layerCount) * NODE_W + Math.max(0, layerCount - 1) * GAP_X;
  const colX = (l) => PAD + l * (NODE_W + GAP_X);
  const cy = (v) => PAD + (y[v] - top);
  const boxes = nodes.map((_, i) => ({ x: colX(layerOf[i]), y: cy(i) - NODE_H / 2 }));
  const lines = edges.map(({ from, to, chain }) => {
    const pts = [[colX(layerOf[from]) + NODE_W, cy(from)]];
    for (const d of chain.slice(1, -1)) {
      pts.push([colX(layerOfItem[d]), cy(d)], [colX(layerOfItem[d]) + NODE_W, cy(d)]);
    }
    pts.push([colX(layerOf[to]) - 2, cy(to)]);
    return { from, to, pts };
  });
  return { boxes, lines, width, height };
}

/** An SVG path through `pts`: horizontal-tangent curves between columns, straight within. */
function edgePath(pts) {
  let d = `M ${pts[0][0]} ${pts[0][1]}`;
  for (let k = 1; k < pts.length; k++) {
    const [x0, y0] = pts[k - 1];
    const [x1, y1] = pts[k];
    if (k % 2 === 0 && y0 === y1) {
      d += ` L ${x1} ${y1}`; // through a dummy slot
    } else {
      const dx = Math.max(16, (x1 - x0) / 2);
      d += ` C ${x0 + dx} ${y0}, ${x1 - dx} ${y1}, ${x1} ${y1}`;
    }
  }
  return d;
}

function svg(tag, attrs = {}) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  return el;
}

function truncate(text, max) {
  return text.length > max ? text.slice(0, max - 1) + '…' : text;
}

function renderGraph(s, nodes, first) {
  const { boxes, lines, width, height } = layout(nodes);
  const root = $('graph');
  const defs = svg('defs');
  const marker = svg('marker', {
    id: 'arrow',
    viewBox: '0 0 10 10',
    refX: 9,
    refY: 5,
    markerWidth: 7,
    markerHeight: 7,
    orient: 'auto-start-reverse',
  });
  marker.append(svg('path', { d: 'M 0 0 L 10 5 L 0 10 z', class: 'arrow' }));
  defs.append(marker);
  const edges = svg('g', { class: 'edges' });
  const group = svg('g', { class: 'nodes' });
  s.nodes = new Map();
  const entries = nodes.map((node, i) => {
    const g = svg('g', { class: 'node', transform: `translate(${boxes[i].x},${boxes[i].y})` });
    g.dataset.resource = node.name;
    const title = svg('title');
    const rect = svg('rect', { width: NODE_W, height: NODE_H, rx: 7, ry: 7 });
    const label = svg('text', { x: 12, y: 19, class: 'name' });
    label.textContent = truncate(node.name, 22);
    const sub = svg('text', { x: 12, y: 36, class: 'state' });
    g.append(title, rect, label, sub);
    const entry = { node: { ...node }, el: g, title, sub, out: [] };
    s.nodes.set(node.name, entry);
    g.addEventListener('click', () => setFilter(s, node.name));
    group.append(g);
    return entry;
  });
  for (const { from, to, pts } of lines) {
    const path = svg('path', { class: 'edge', d: edgePath(pts), 'marker-end': 'url(#arrow)' });
    path.dataset.from = nodes[from].name;
    path.dataset.to = nodes[to].name;
    entries[from].out.push(path);
    edges.append(path);
  }
  for (const e of entries) paintNode(e);
  root.setAttribute('viewBox', `0 0 ${width} ${height}`);
  root.replaceChildren(defs, edges, group);
  s.size = { w: width, h: height };
  $('node-count').textContent = String(nodes.length);
  if (first || !s.zoomed) s.scale = initialScale(s);
  applyZoom(s);
  if (s.filter !== null && !s.nodes.has(s.filter)) setFilter(s, s.filter);
  else if (s.filter !== null) s.nodes.get(s.filter).el.classList.add('selected');
}

function paintNode(entry) {
  const { node, el, title, sub, out } = entry;
  const cls = statusClass(node.action, node.status);
  const label = actionStatus(node.action, node.status);
  el.setAttribute('class', 'node ' + cls + (el.classList.contains('selected') ? ' selected' : ''));
  el.dataset.status = label;
  sub.textContent = label;
  title.textContent =
    `${node.name}${node.type ? ' (' + node.type + ')' : ''}\n${label}` +
    (node.status_reason ? ': ' + node.status_reason : '') +
    ((node.depends_on || []).length ? '\ndepends on: ' + node.depends_on.join(', ') : '');
  const ready = cls === 'status-complete';
  for (const p of out) p.classList.toggle('ready', ready);
}

// --- zoom ------------------------------------------------------------------------------------

function fitScale(s) {
  const box = $('graph-scroll');
  const w = Math.max(100, box.clientWidth - 4);
  const h = Math.max(100, box.clientHeight - 4);
  return Math.min(1, w / s.size.w, h / s.size.h);
}

function initialScale(s) {
  // Small graphs at full size; big ones fitted to the width, but kept readable (then scroll).
  const box = $('graph-scroll');
  const w = Math.max(100, box.clientWidth - 4);
  return Math.max(0.5, Math.min(1, w / s.size.w));
}

function applyZoom(s) {
  const root = $('graph');
  root.setAttribute('width', String(Math.round(s.size.w * s.scale)));
  root.setAttribute('height', String(Math.round(s.size.h * s.scale)));
}

function zoom(factor) {
  const s = state.s;
  if (!s) return;
  s.scale = Math.min(3, Math.max(0.1, s.scale * factor));
  s.zoomed = true;
  applyZoom(s);
}

function setupZoom() {
  $('zoom-in').addEventListener('click', () => zoom(1.25));
  $('zoom-out').addEventListener('click', () => zoom(0.8));
  $('zoom-fit').addEventListener('click', () => {
    const s = state.s;
    if (!s) return;
    s.scale = Math.max(0.1, fitScale(s));
    s.zoomed = true;
    applyZoom(s);
  });
  $('graph-scroll').addEventListener(
    'wheel',
    (ev) => {
      if (!ev.ctrlKey) return;
      ev.preventDefault();
      zoom(ev.deltaY < 0 ? 1.1 : 1 / 1.1);
    },
    { passive: false },
  );
}

// ---------------------------------------------------------------------------------------------

function start() {
  takeTokenFromUrl();
  state.token = sessionStorage.getItem(TOKEN_KEY);
  setupTokenForm();
  setupZoom();
  window.addEventListener('hashchange', route);
  route();
}

start();
