// The administrator's fleet view of the receiver's page (coach.html).
// viewer.js signs in; when the login answer's role is "admin" it calls
// window.fleetView.start, and this script shows every enrolled box from
// GET /v1/fleet (asked again every few seconds): boxes with an alert
// first, then offline and stale ones, then the healthy ones, as the
// receiver orders them. Ages are counted from the receiver's clock (the
// answer's "at"), so a wrong clock on the phone does not change them.
//
// Stable attributes for tests: #f-status data-state (loading, live,
// reconnecting, error, signin-expired); tr[data-f-box] (in the page's
// order) with data-health (alert, offline, stale, online) and
// data-online; li[data-f-alert] (data-kind) under its box.
'use strict';
(() => {
  const section = document.getElementById('fleet');
  const statusEl = document.getElementById('f-status');
  const body = document.getElementById('f-boxes');
  const none = document.getElementById('f-none');
  const REFRESH_MS = 5000;

  let token = '';
  let generation = 0;
  let timer = null;

  function setStatus(state, text) {
    statusEl.dataset.state = state;
    statusEl.textContent = text;
  }

  function el(tag, attrs, text) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === 'class') e.className = v;
      else e.setAttribute(k, v);
    }
    if (text !== undefined) e.textContent = text;
    return e;
  }

  // age is a duration in seconds for people: 40s, 12m, 3h, 5d.
  function age(s) {
    if (!(s > 0)) return '0s';
    if (s >= 172800) return Math.floor(s / 86400) + 'd';
    if (s >= 3600) return Math.floor(s / 3600) + 'h';
    if (s >= 60) return Math.floor(s / 60) + 'm';
    return Math.floor(s) + 's';
  }

  function since(iso, at) {
    const t = Date.parse(iso);
    return isNaN(t) ? null : (at - t) / 1000;
  }

  function size(n) {
    if (n >= 1 << 30) return (n / (1 << 30)).toFixed(1) + ' GiB';
    if (n >= 1 << 20) return (n / (1 << 20)).toFixed(1) + ' MiB';
    if (n >= 1 << 10) return (n / (1 << 10)).toFixed(1) + ' KiB';
    return n + ' B';
  }

  const healthText = { alert: 'Alert', offline: 'Offline', stale: 'Stale', online: 'Online' };

  function healthLine(b, at) {
    const c = b.control || {};
    let t = healthText[b.health] || b.health;
    if (c.connected) {
      const r = since(b.reported, at);
      if (b.health === 'stale') t += ', no report for ' + (r === null ? 'ever' : age(r));
      else t += c.since ? ', connected ' + age(since(c.since, at)) : '';
      if (b.health === 'alert') t += ' (online)';
    } else {
      const seen = since(c.last_seen, at);
      t += seen === null ? ', never connected' : ', last seen ' + age(seen) + ' ago';
      if (b.health === 'alert') t += ' (offline)';
    }
    return t;
  }

  function cell(label, text, cls) {
    return el('td', { 'data-label': label, class: cls || '' }, text);
  }

  function renderBox(b, at) {
    const r = b.report;
    const tr = el('tr', { 'data-f-box': b.device, 'data-health': b.health, 'data-online': String(!!(b.control && b.control.connected)) });
    const name = el('td', { 'data-label': 'Box', class: 'f-name' });
    name.append(el('span', { class: 'f-device' }, b.device));
    if (r && r.version) name.append(el('span', { class: 'f-version' }, ' ' + r.version));
    tr.append(name);
    const health = el('td', { 'data-label': 'Health', class: 'f-health' });
    health.append(el('span', { class: 'f-badge', 'data-health': b.health }, healthLine(b, at)));
    if (r && r.alerts && r.alerts.length) {
      const ul = el('ul', { class: 'f-alerts' });
      for (const a of r.alerts) ul.append(el('li', { 'data-f-alert': '', 'data-kind': a.kind }, a.message));
      health.append(ul);
    }
    tr.append(health);
    if (!r) {
      tr.append(cell('Backlog', '–'), cell('Last upload', '–'), cell('Certificate', '–'), cell('Diag', '–'));
      return tr;
    }
    const bl = r.backlog || {};
    let backlog = 'empty';
    if (bl.segments || bl.held) {
      backlog = bl.segments + ' seg, ' + size(bl.bytes || 0) + ', oldest ' + age(bl.oldest_age_seconds);
      if (bl.held) backlog += ', ' + bl.held + ' held';
    }
    const up = since(r.last_upload, at);
    const cert = since(r.cert_expiry, at);
    let certText = '–';
    if (cert !== null) certText = cert > 0 ? 'expired ' + age(cert) + ' ago' : 'expires in ' + age(-cert);
    let diag = '–';
    if (r.diag) {
      const bad = Object.entries(r.diag.checks || {}).filter(([, s]) => s === 'warn' || s === 'fail').map(([n, s]) => n + '=' + s).sort();
      diag = r.diag.status + (bad.length ? ': ' + bad.join(', ') : '') + ' (' + age(since(r.diag.at, at)) + ' ago)';
    }
    tr.append(cell('Backlog', backlog), cell('Last upload', up === null ? 'none yet' : age(up) + ' ago'),
      cell('Certificate', certText, cert !== null && cert > -30 * 86400 ? 'f-warn' : ''), cell('Diag', diag));
    return tr;
  }

  function render(f) {
    const at = Date.parse(f.at) || Date.now();
    body.replaceChildren(...(f.boxes || []).map((b) => renderBox(b, at)));
    none.hidden = (f.boxes || []).length > 0;
  }

  async function load(gen) {
    let resp;
    try {
      resp = await fetch('/v1/fleet', { headers: { 'Authorization': 'Bearer ' + token }, cache: 'no-store' });
    } catch (e) {
      if (gen === generation) setStatus('reconnecting', 'Cannot reach the server; trying again…');
      return true;
    }
    if (gen !== generation) return false;
    if (resp.status === 401) { setStatus('signin-expired', 'Your sign-in expired. Sign in again.'); return false; }
    if (!resp.ok) {
      let b = {};
      try { b = await resp.json(); } catch (e) { /* not JSON */ }
      if (resp.status === 403) { setStatus('error', 'This account is not an administrator\'s.'); return false; }
      setStatus('reconnecting', 'The boxes cannot be shown just now (' + (b.reason || resp.status) + '); trying again…');
      return true;
    }
    const f = await resp.json();
    if (gen !== generation) return false;
    render(f);
    setStatus('live', 'Boxes as of ' + new Date(Date.parse(f.at)).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' }) + '.');
    return true;
  }

  async function loop(gen) {
    if (gen !== generation) return;
    const again = await load(gen);
    if (again && gen === generation) timer = setTimeout(() => loop(gen), REFRESH_MS);
  }

  function stop() {
    generation++;
    clearTimeout(timer);
    token = '';
    body.replaceChildren();
    section.hidden = true;
  }

  function start(opts) {
    stop();
    token = opts.token;
    section.hidden = false;
    setStatus('loading', 'Loading the boxes…');
    loop(generation);
  }

  window.fleetView = { start, stop };
})();
