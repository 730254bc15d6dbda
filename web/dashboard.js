// @ts-check
/**
 * The dashboard's script: polls `dashboard/data` every few seconds and draws it. Every value is
 * written with textContent or an attribute (never innerHTML): company names come from Intuit and
 * error texts from the network. Nothing inline (the page's Content-Security-Policy allows only
 * this file and the stylesheet); positions are set through the CSSOM, which the policy allows.
 *
 * Each realm's card is kept between polls and only the parts whose data changed are redrawn, so a
 * bar that has the keyboard focus keeps it (and its tooltip) while the page updates.
 *
 * @typedef {import('../src/dashboard-model.js').DashboardData} DashboardData
 * @typedef {import('../src/dashboard-model.js').DashboardRealm} DashboardRealm
 * @typedef {import('../src/dashboard-model.js').DashboardAlert} DashboardAlert
 * @typedef {import('../src/dashboard-model.js').UptimeBar} UptimeBar
 * @typedef {import('../src/dashboard-model.js').LatencySummary} LatencySummary
 * @typedef {import('../src/dashboard-model.js').Incident} Incident
 * @typedef {import('../src/dashboard-model.js').Silence} Silence
 */

const POLL_MS = 3000;
const SVG_NS = 'http://www.w3.org/2000/svg';

/** Badge words and icons: the colour is never the only carrier. */
const BADGES = /** @type {const} */ ({
  pass: { icon: '✓', text: 'Pass' },
  warn: { icon: '⚠', text: 'Throttled' },
  fail: { icon: '✕', text: 'Failing' },
  reconnect_required: { icon: '⟲', text: 'Reconnect required' },
  disconnected: { icon: '⏻', text: 'Disconnected' },
  silenced: { icon: '🔕', text: 'Silenced' },
  unknown: { icon: '…', text: 'No probe yet' },
});

/**
 * An element with attributes and children (strings become text nodes).
 * @param {string} tag
 * @param {Record<string, string | undefined>} [attrs]
 * @param {Array<Node | string | null | undefined | false>} children
 * @returns {HTMLElement}
 */
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) if (value !== undefined) node.setAttribute(name, value);
  for (const child of children) if (child !== null && child !== undefined && child !== false) node.append(child);
  return node;
}

/**
 * @param {string} tag
 * @param {Record<string, string | number>} [attrs]
 * @returns {SVGElement}
 */
function svg(tag, attrs = {}) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  return node;
}

/** @param {string} iso */
function fmtTime(iso) {
  return `${iso.slice(0, 10)} ${iso.slice(11, 16)} UTC`;
}

/** @param {number} ms */
function fmtDuration(ms) {
  const s = Math.round(ms / 1000);
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min`;
  const h = Math.floor(m / 60);
  if (h < 48) return m % 60 === 0 ? `${h} h` : `${h} h ${m % 60} min`;
  const d = Math.floor(h / 24);
  return h % 24 === 0 ? `${d} d` : `${d} d ${h % 24} h`;
}

/** @param {number | null} uptime 0..1 */
function fmtPercent(uptime) {
  if (uptime === null) return 'no probes';
  const pct = Math.floor(uptime * 10000) / 100;
  return `${pct} %`;
}

/** @param {number} n @param {string} one @param {string} [many] */
const plural = (n, one, many = `${one}s`) => `${n.toLocaleString('en')} ${n === 1 ? one : many}`;

/**
 * A bar's class: how it is coloured and patterned (the legend names each).
 * @param {UptimeBar} b
 */
function barClass(b) {
  if (b.probes === 0 || b.uptime === null) return 'bar-none';
  const notUp = b.probes - b.up;
  if (notUp === 0 && b.throttled === 0) return 'bar-up';
  // Every probe that was not up was throttled (or throttling is counted as up): Intuit slowed us down.
  if (notUp - b.throttled <= 0) return 'bar-throttled';
  return b.uptime >= 0.99 ? 'bar-degraded' : 'bar-down';
}

/**
 * The tooltip's lines for a bar (also its accessible name).
 * @param {UptimeBar} b
 * @param {'day' | 'halfHour'} kind
 */
function barLines(b, kind) {
  const when = kind === 'day' ? `${b.from.slice(0, 10)} (UTC day)` : `${b.from.slice(0, 10)} ${b.from.slice(11, 16)}–${b.to.slice(11, 16)} UTC`;
  const failures = Object.entries(b.failures)
    .filter(([, n]) => (n ?? 0) > 0)
    .map(([code, n]) => `${code} ${n}`);
  return [
    when,
    `uptime ${fmtPercent(b.uptime)}`,
    plural(b.probes, 'probe'),
    b.throttled > 0 ? `throttled ${b.throttled}` : '',
    failures.length > 0 ? `failures: ${failures.join(', ')}` : b.probes > 0 ? 'no failures' : '',
  ].filter(Boolean);
}

/**
 * A strip of bars, one focus stop: arrow keys, Home and End move along it; the focused or hovered
 * bar shows its tooltip; Escape hides it.
 * @param {readonly UptimeBar[]} bars
 * @param {'day' | 'halfHour'} kind
 * @param {string} label
 */
function barStrip(bars, kind, label) {
  const strip = el('div', { class: `strip strip-${kind}`, role: 'group', 'aria-label': label });
  const row = el('div', { class: 'bars' });
  const tip = el('div', { class: 'tooltip', 'aria-hidden': 'true', hidden: '' });
  bars.forEach((b, i) => {
    const lines = barLines(b, kind);
    const bar = el('span', {
      class: `bar ${barClass(b)}`,
      role: 'img',
      tabindex: i === bars.length - 1 ? '0' : '-1',
      'aria-label': lines.join(', '),
      'data-index': String(i),
      'data-from': b.from,
      'data-uptime': b.uptime === null ? '' : String(b.uptime),
    });
    row.append(bar);
  });
  /** @param {Element | null} bar */
  const show = (bar) => {
    if (!(bar instanceof HTMLElement) || !bar.classList.contains('bar')) return;
    const b = bars[Number(bar.dataset.index)];
    if (!b) return;
    tip.replaceChildren(...barLines(b, kind).map((line, i) => el(i === 0 ? 'strong' : 'span', {}, line)));
    tip.hidden = false;
    // Centred over the bar, kept inside the strip.
    const width = tip.offsetWidth;
    const centre = bar.offsetLeft + bar.offsetWidth / 2;
    const left = Math.max(0, Math.min(strip.clientWidth - width, centre - width / 2));
    tip.style.left = `${left}px`;
  };
  const hide = () => {
    tip.hidden = true;
  };
  strip.addEventListener('focusin', (e) => show(/** @type {Element} */ (e.target)));
  strip.addEventListener('focusout', hide);
  row.addEventListener('mouseover', (e) => show(/** @type {Element} */ (e.target)));
  row.addEventListener('mouseleave', () => (strip.contains(document.activeElement) ? show(document.activeElement) : hide()));
  strip.addEventListener('keydown', (e) => {
    const current = document.activeElement;
    if (!(current instanceof HTMLElement) || !current.classList.contains('bar')) return;
    if (e.key === 'Escape') return hide();
    const i = Number(current.dataset.index);
    const to = { ArrowLeft: i - 1, ArrowRight: i + 1, Home: 0, End: bars.length - 1 }[e.key];
    if (to === undefined) return;
    e.preventDefault();
    const next = row.children[Math.max(0, Math.min(bars.length - 1, to))];
    if (!(next instanceof HTMLElement)) return;
    current.tabIndex = -1;
    next.tabIndex = 0;
    next.focus();
  });
  strip.append(row, tip);
  return strip;
}

/**
 * The latency chart: p50 and p95 over 24 h and over 7 d, as bars with their values written.
 * @param {LatencySummary} day
 * @param {LatencySummary} week
 */
function latencyChart(day, week) {
  const rows = [
    { label: '24 h', s: day },
    { label: '7 d', s: week },
  ];
  const max = Math.max(1, ...rows.flatMap((r) => [r.s.p50 ?? 0, r.s.p95 ?? 0]));
  const words = rows
    .map((r) => (r.s.p50 === null ? `${r.label}: no probes` : `${r.label}: p50 ${r.s.p50} ms, p95 ${r.s.p95} ms over ${plural(r.s.probes, 'probe')}`))
    .join('; ');
  const width = 320;
  const chart = svg('svg', { viewBox: `0 0 ${width} 84`, class: 'latency', role: 'img', 'aria-label': `Latency (CompanyInfo). ${words}` });
  const title = svg('title');
  title.textContent = `Latency. ${words}`;
  chart.append(title);
  const x0 = 40;
  const span = width - x0 - 92;
  rows.forEach((r, i) => {
    const y = 6 + i * 40;
    const label = svg('text', { x: 0, y: y + 18, class: 'lat-label' });
    label.textContent = r.label;
    chart.append(label);
    if (r.s.p50 === null || r.s.p95 === null) {
      const none = svg('text', { x: x0, y: y + 18, class: 'lat-value' });
      none.textContent = 'no probes';
      chart.append(none);
      return;
    }
    for (const [j, key] of /** @type {const} */ (['p50', 'p95']).entries()) {
      const value = r.s[key] ?? 0;
      const w = Math.max(2, (value / max) * span);
      chart.append(svg('rect', { x: x0, y: y + j * 15, width: w, height: 12, rx: 2, class: `lat-${key}` }));
      const text = svg('text', { x: x0 + w + 4, y: y + j * 15 + 10, class: 'lat-value' });
      text.textContent = `${key} ${value} ms`;
      chart.append(text);
    }
  });
  return chart;
}

/**
 * @param {string} text
 * @param {HTMLElement} status where "Copied" is said
 */
async function copyText(text, status) {
  try {
    if (navigator.clipboard && window.isSecureContext) {
      await navigator.clipboard.writeText(text);
    } else {
      // Plain HTTP on an intranet has no Clipboard API: the old way, through a selected field.
      const field = /** @type {HTMLTextAreaElement} */ (el('textarea', { readonly: '', class: 'offscreen', 'aria-hidden': 'true' }, text));
      document.body.append(field);
      field.select();
      const done = document.execCommand('copy');
      field.remove();
      if (!done) throw new Error('copy refused');
    }
    status.textContent = 'Copied';
  } catch {
    status.textContent = 'Copy failed: select the id and copy it';
  }
}

/** @param {keyof typeof BADGES} state */
function badge(state) {
  const b = BADGES[state];
  return el('span', { class: `badge badge-${state}` }, el('span', { 'aria-hidden': 'true' }, b.icon), ` ${b.text}`);
}

/**
 * @param {DashboardRealm} r
 * @param {DashboardData} data
 */
function realmHead(r, data) {
  const now = Date.parse(data.generatedAt);
  const name = r.companyName ?? `Realm ${r.realmId}`;
  const probe = r.lastProbe
    ? `last probe ${fmtDuration(Math.max(0, now - Date.parse(r.lastProbe.at)))} ago: ${r.lastProbe.status}${r.lastProbe.errorCode && r.lastProbe.errorCode !== 'ok' ? ` (${r.lastProbe.errorCode})` : ''}${r.lastProbe.latencyMs !== null ? `, ${r.lastProbe.latencyMs} ms` : ''}`
    : 'no probe yet';
  const under = r.badge === 'silenced' ? ` (${BADGES[r.state].text.toLowerCase()}; silenced until ${fmtTime(r.silencedUntil ?? '')})` : '';
  return [
    el('h3', { class: 'realm-name' }, name),
    el('p', { class: 'realm-state' }, badge(r.badge), under),
    el('p', { class: 'muted realm-meta' }, `Realm ${r.realmId}${r.environment ? ` · ${r.environment}` : ''} · ${probe}`),
  ];
}

/** @param {DashboardRealm} r */
function realmBars(r) {
  const h = r.history;
  if (!h) return [el('p', { class: 'muted' }, 'History not available right now (see the notice above).')];
  const below = h.days.filter((d) => d.uptime !== null && d.uptime < 1).length;
  return [
    el('p', { class: 'strip-title' }, `90 days: ${fmtPercent(h.uptime90d)} up`, below > 0 ? ` · ${plural(below, 'day')} under 100 %` : ''),
    barStrip(h.days, 'day', `Uptime by day, last 90 days, ${fmtPercent(h.uptime90d)} up. Arrow keys move between days.`),
    el('p', { class: 'strip-title' }, 'Last 24 hours'),
    barStrip(h.halfHours, 'halfHour', 'Uptime by half hour, last 24 hours. Arrow keys move between half hours.'),
  ];
}

/** @param {DashboardRealm} r */
function realmLatency(r) {
  if (!r.history) return [];
  return [el('p', { class: 'strip-title' }, 'Latency'), latencyChart(r.history.latency24h, r.history.latency7d)];
}

/**
 * @param {number | null} days
 * @param {string | null} at
 * @param {string} what
 * @param {number} warnDays
 */
function tokenLife(days, at, what, warnDays) {
  if (days === null || at === null) return el('span', {}, `${what}: unknown`);
  const warn = days < warnDays;
  const text = days < 0 ? `${what}: expired ${at.slice(0, 10)}` : `${what}: ${plural(days, 'day')} left (${at.slice(0, 10)})`;
  return el('span', { class: warn ? 'token-warn' : 'token-ok' }, warn ? el('span', { 'aria-hidden': 'true' }, '⚠ ') : '', text, warn ? ` · under ${warnDays} days` : '');
}

/**
 * @param {DashboardRealm} r
 * @param {number} warnDays
 */
function realmDetails(r, warnDays) {
  const items = [];
  const e = r.lastError;
  if (e) {
    const status = el('span', { class: 'copy-status', role: 'status' });
    const tid = e.intuitTid
      ? el('span', { class: 'tid' }, 'intuit_tid ', el('code', {}, e.intuitTid), ' ', el('button', { type: 'button', class: 'copy', 'data-copy': e.intuitTid, 'aria-label': `Copy intuit_tid ${e.intuitTid}` }, 'Copy'), ' ', status)
      : null;
    items.push(
      el('dt', {}, 'Last error'),
      el(
        'dd',
        {},
        el('span', {}, `${fmtTime(e.at)} · ${e.errorCode ?? 'error'}${e.httpStatus !== null ? ` · HTTP ${e.httpStatus}` : ''}`),
        e.error ? el('span', { class: 'error-text' }, e.error) : null,
        tid,
      ),
    );
  }
  const t = r.refreshToken;
  items.push(
    el('dt', {}, 'Refresh token'),
    t.revoked
      ? el('dd', {}, el('span', { class: 'token-warn' }, el('span', { 'aria-hidden': 'true' }, '⟲ '), `Revoked by Intuit: reconnect with qbhealth connect --realm-id ${r.realmId}`))
      : el('dd', { class: 'token-life' }, tokenLife(t.rollingDaysLeft, t.rollingExpiresAt, 'rolling', warnDays), tokenLife(t.hardDaysLeft, t.hardExpiresAt, 'hard (5-year)', warnDays)),
  );
  return [el('dl', { class: 'details' }, ...items)];
}

/** @type {Map<string, { root: HTMLElement; parts: Record<string, { node: HTMLElement; sig: string }> }>} */
const cards = new Map();

/**
 * Redraws one part of a card when its data changed, keeping the focused bar focused.
 * @param {HTMLElement} node
 * @param {{ sig: string }} part
 * @param {string} sig
 * @param {() => Array<Node>} draw
 */
function redraw(node, part, sig, draw) {
  if (part.sig === sig) return;
  part.sig = sig;
  const active = document.activeElement;
  const focused = active instanceof HTMLElement && node.contains(active) && active.classList.contains('bar') ? active : null;
  const stripIndex = focused ? [...node.querySelectorAll('.strip')].findIndex((s) => s.contains(focused)) : -1;
  const barIndex = focused?.dataset.index;
  node.replaceChildren(...draw());
  if (focused && stripIndex >= 0) {
    const strip = node.querySelectorAll('.strip')[stripIndex];
    const bar = strip?.querySelector(`.bar[data-index="${barIndex}"]`);
    if (bar instanceof HTMLElement) {
      for (const other of strip?.querySelectorAll('.bar') ?? []) if (other instanceof HTMLElement) other.tabIndex = -1;
      bar.tabIndex = 0;
      bar.focus({ preventScroll: true });
    }
  }
}

/** @param {DashboardData} data */
function renderRealms(data) {
  const container = /** @type {HTMLElement} */ (document.getElementById('realms'));
  const seen = new Set();
  let previous = /** @type {Element | null} */ (null);
  for (const r of data.realms) {
    seen.add(r.realmId);
    let card = cards.get(r.realmId);
    if (!card) {
      const parts = { head: el('header', { class: 'realm-head' }), bars: el('div', { class: 'realm-bars' }), latency: el('div', { class: 'realm-latency' }), details: el('div', { class: 'realm-details' }) };
      const root = el('article', { class: 'realm', id: `realm-${r.realmId}`, 'data-realm': r.realmId }, parts.head, parts.bars, parts.latency, parts.details);
      card = { root, parts: Object.fromEntries(Object.entries(parts).map(([k, node]) => [k, { node, sig: '' }])) };
      cards.set(r.realmId, card);
    }
    const { root, parts } = card;
    root.dataset.badge = r.badge;
    const p = /** @type {Record<'head' | 'bars' | 'latency' | 'details', { node: HTMLElement; sig: string }>} */ (parts);
    redraw(p.head.node, p.head, JSON.stringify([r.companyName, r.badge, r.state, r.silencedUntil, r.environment, r.lastProbe, data.generatedAt.slice(0, 18)]), () => realmHead(r, data));
    redraw(p.bars.node, p.bars, JSON.stringify([r.history?.days, r.history?.halfHours, r.history?.uptime90d]), () => realmBars(r));
    redraw(p.latency.node, p.latency, JSON.stringify([r.history?.latency24h, r.history?.latency7d]), () => realmLatency(r));
    redraw(p.details.node, p.details, JSON.stringify([r.lastError, r.refreshToken, data.refreshTokenWarnDays]), () => realmDetails(r, data.refreshTokenWarnDays));
    // Moved only when out of order: moving a node would take the focus from a bar in it.
    const expectedNext = previous ? previous.nextElementSibling : container.firstElementChild;
    if (expectedNext !== root) previous ? previous.after(root) : container.prepend(root);
    previous = root;
  }
  for (const [id, card] of cards) {
    if (seen.has(id)) continue;
    card.root.remove();
    cards.delete(id);
  }
  if (data.realms.length === 0) container.replaceChildren(el('p', { class: 'muted' }, 'No company is connected yet: run qbhealth connect.'));
  else container.querySelector(':scope > p.muted')?.remove();
}

/**
 * @param {DashboardData} data
 * @param {string | null} realmId
 */
function subjectOf(data, realmId) {
  if (realmId === null) return 'the monitor';
  return data.realms.find((r) => r.realmId === realmId)?.companyName ?? `realm ${realmId}`;
}

/** @param {DashboardData} data */
function renderAlerts(data) {
  const box = /** @type {HTMLElement} */ (document.getElementById('alerts'));
  if (data.alerts.length === 0) return box.replaceChildren(el('p', { class: 'ok-line' }, el('span', { 'aria-hidden': 'true' }, '✓ '), 'No open alerts'));
  box.replaceChildren(
    el(
      'ul',
      { class: 'list' },
      ...data.alerts.map((a) =>
        el(
          'li',
          { class: `alert alert-${a.severity}` },
          el('span', { class: `sev sev-${a.severity}` }, el('span', { 'aria-hidden': 'true' }, a.severity === 'critical' ? '▲ ' : '● '), a.severity),
          ' ',
          el('strong', {}, a.subject),
          ` · ${a.kind} · open for ${fmtDuration(a.openForMs)} (since ${fmtTime(a.since)})`,
          a.silenced ? el('span', { class: 'tag' }, el('span', { 'aria-hidden': 'true' }, '🔕 '), 'silenced') : null,
          el('span', { class: 'summary-text' }, a.summary),
        ),
      ),
    ),
  );
}

/** @param {DashboardData} data */
function renderSilences(data) {
  const box = /** @type {HTMLElement} */ (document.getElementById('silences'));
  if (data.silences.length === 0) return box.replaceChildren(el('p', { class: 'muted' }, 'None.'));
  box.replaceChildren(
    el(
      'ul',
      { class: 'list' },
      ...data.silences.map((s) =>
        el(
          'li',
          {},
          el('span', { 'aria-hidden': 'true' }, '🔕 '),
          el('strong', {}, s.realmId ? subjectOf(data, s.realmId) : 'every company'),
          `${s.kind ? ` · ${s.kind}` : ' · every alert'} · until ${fmtTime(s.endsAt)} · by ${s.createdBy}`,
          el('span', { class: 'summary-text' }, s.reason),
        ),
      ),
    ),
  );
}

/**
 * @param {DashboardData} data
 * @param {Incident} i
 */
function incidentItem(data, i) {
  const span = i.resolvedAt ? `${fmtTime(i.raisedAt)} → ${fmtTime(i.resolvedAt)}` : `${fmtTime(i.raisedAt)} → still open`;
  return el(
    'li',
    { class: `incident${i.resolvedAt ? '' : ' incident-open'}` },
    el('span', { class: `sev sev-${i.severity}` }, el('span', { 'aria-hidden': 'true' }, i.severity === 'critical' ? '▲ ' : '● '), i.severity),
    ' ',
    el('strong', {}, subjectOf(data, i.realmId)),
    ` · ${i.kind}`,
    el('span', { class: 'incident-time' }, `${span} · lasted ${fmtDuration(i.durationMs)}${i.resolvedAt ? '' : ' so far'}`),
    el('span', { class: 'summary-text' }, i.cause, i.errorCode ? ` (${i.errorCode})` : ''),
    el('span', { class: 'muted' }, `${plural(i.notifications, 'notification')} sent`, i.silenced ? ' · silenced' : ''),
  );
}

/** @param {DashboardData} data */
function renderIncidents(data) {
  const box = /** @type {HTMLElement} */ (document.getElementById('incidents'));
  if (data.incidents.length === 0) return box.replaceChildren(el('p', { class: 'muted' }, data.stored.readAt ? 'No incident in 90 days.' : 'Not available right now.'));
  box.replaceChildren(el('ol', { class: 'list' }, ...data.incidents.map((i) => incidentItem(data, i))));
}

/**
 * @param {boolean} ok
 * @param {string} yes
 * @param {string} no
 */
const check = (ok, yes, no) => el('span', { class: ok ? 'check-ok' : 'check-fail' }, el('span', { 'aria-hidden': 'true' }, ok ? '✓ ' : '✕ '), ok ? yes : no);

/** @param {DashboardData} data */
function renderSystem(data) {
  const s = data.system;
  const rows = [
    el('dt', {}, 'PostgreSQL'),
    el('dd', {}, check(s.postgres.reachable, 'reachable', `unreachable: ${s.postgres.error ?? ''}`)),
    el('dt', {}, 'Schema'),
    el('dd', {}, check(s.schema.verified, 'verified', `not verified: ${s.schema.error ?? ''}`)),
    el('dt', {}, 'Spool'),
    el('dd', {}, check(s.spoolPending === 0, 'empty', `${plural(s.spoolPending, 'result')} waiting for PostgreSQL`)),
    el('dt', {}, 'Version'),
    el('dd', {}, s.version),
  ];
  if (s.members.length > 0) {
    rows.push(
      el('dt', {}, 'Fleet'),
      el(
        'dd',
        {},
        el(
          'ul',
          { class: 'list members' },
          ...s.members.map((m) =>
            el(
              'li',
              {},
              check(m.live, 'live', 'not heartbeating'),
              ' ',
              el('code', {}, m.instanceId),
              ` · ${m.host} · v${m.version} · ${plural(m.realmsHeld, 'realm')} held · heartbeat ${fmtDuration(m.heartbeatAgeMs)} ago${m.self ? ' · this member' : ''}`,
            ),
          ),
        ),
      ),
    );
  }
  /** @type {HTMLElement} */ (document.getElementById('system')).replaceChildren(el('dl', { class: 'details' }, ...rows));
}

/** @param {DashboardData} data */
function summaryText(data) {
  const counts = new Map();
  for (const r of data.realms) counts.set(r.badge, (counts.get(r.badge) ?? 0) + 1);
  const parts = [...counts].map(([state, n]) => `${n} ${BADGES[/** @type {keyof typeof BADGES} */ (state)].text.toLowerCase()}`);
  return `${plural(data.realms.length, 'company', 'companies')}${parts.length ? `: ${parts.join(', ')}` : ''} · ${plural(data.alerts.length, 'open alert')}`;
}

/** @param {string | null} text */
function notice(text) {
  const box = /** @type {HTMLElement} */ (document.getElementById('notice'));
  if (!text) {
    box.hidden = true;
    box.textContent = '';
    return;
  }
  if (box.textContent !== text) box.textContent = text;
  box.hidden = false;
}

/** @param {DashboardData} data */
function render(data) {
  renderRealms(data);
  renderAlerts(data);
  renderSilences(data);
  renderIncidents(data);
  renderSystem(data);
  const summary = /** @type {HTMLElement} */ (document.getElementById('summary'));
  const text = summaryText(data);
  if (summary.textContent !== text) summary.textContent = text;
  /** @type {HTMLElement} */ (document.getElementById('updated')).textContent = `Updated ${data.generatedAt.slice(11, 19)} UTC · every ${POLL_MS / 1000} s · version ${data.system.version}`;
  const problems = [
    data.system.shuttingDown ? 'This monitor is shutting down.' : '',
    data.system.postgres.reachable ? '' : `PostgreSQL is unreachable: ${data.system.postgres.error ?? ''}. Results wait in the spool.`,
    data.stored.error ? `History: ${data.stored.error}.` : '',
  ].filter(Boolean);
  notice(problems.length > 0 ? problems.join(' ') : null);
  document.body.dataset.loaded = 'true';
}

async function poll() {
  try {
    const res = await fetch('dashboard/data', { cache: 'no-store', credentials: 'same-origin', headers: { accept: 'application/json' } });
    if (res.status === 401) {
      notice('Signed out: reload the page to sign in again.');
      return;
    }
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    render(/** @type {DashboardData} */ (await res.json()));
  } catch (err) {
    notice(`Cannot reach the monitor (${err instanceof Error ? err.message : String(err)}); the page shows what it had and retries every ${POLL_MS / 1000} s.`);
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

document.addEventListener('click', (e) => {
  const target = e.target;
  if (!(target instanceof HTMLElement) || !target.matches('button.copy')) return;
  const status = target.parentElement?.querySelector('.copy-status');
  if (status instanceof HTMLElement) void copyText(target.dataset.copy ?? '', status);
});

void poll();
