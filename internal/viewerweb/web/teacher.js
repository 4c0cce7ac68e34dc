// The teacher's view of the receiver's page (coach.html). viewer.js signs
// in; when the login answer's role is "teacher" (or "admin") it calls
// window.teacherView.start, and this script shows the rooms the teacher
// answers for (GET /v1/teacher/rooms), keeps them current from the event
// stream (GET /v1/teacher/events, read with fetch since EventSource cannot
// send the bearer token; asked again when it drops) and sends the
// teacher's decisions (POST /v1/teacher/rooms/{device}/decision), showing
// each outcome as the box or the receiver gave it.
//
// Stable attributes for tests: #t-status data-state (connecting, live,
// reconnecting, error) and data-reason; li[data-t-room] with
// data-online and data-recording (and data-until while recording);
// li[data-t-request] (data-viewer, data-audio, data-shown: when it first
// showed, ms since the epoch), its input[data-t-talk] ("Coach may speak",
// sent as talk with accept and video_only) and its
// button[data-t-action] (accept, video_only, decline; data-for);
// li[data-t-watching] (data-viewer, data-audio, data-until, data-talk: may
// speak, data-speaking: speaking now);
// li[data-t-cooldown] (data-viewer, data-reason, data-until); the room's
// button[data-t-action] end_all, start_session, stop_session; while not
// recording, select[data-t-anonymise] (off, whole, masks: how the session
// Start recording starts filters the picture; sent as anonymise), and the
// room's data-anonymise: the running session's mode;
// [data-t-result] with data-action,
// data-outcome (sending, ok, refused, offline, error) and data-reason.
'use strict';
(() => {
  const section = document.getElementById('teacher');
  const statusEl = document.getElementById('t-status');
  const list = document.getElementById('t-rooms');
  const noRooms = document.getElementById('t-no-rooms');
  const who = document.getElementById('t-who');
  const RECONNECT_MS = [500, 1000, 2000, 5000];

  let token = '';
  let tokenExpires = 0;
  let onEnd = null; // viewer.js: back to the sign-in form, with a reason
  let generation = 0; // bumps on sign-out so stale streams stop
  let abort = null;
  const rooms = new Map(); // device → {device, online, state}
  const startModes = new Map(); // device → the mode chosen for Start recording
  const results = new Map(); // device → {action, outcome, reason, text}
  const busy = new Set(); // devices with a decision in flight
  const shown = new Map(); // request id → when it first showed (ms since the epoch)
  const talk = new Map(); // request id → "Coach may speak" ticked

  function setStatus(state, text, reason) {
    statusEl.dataset.state = state;
    statusEl.dataset.reason = reason || '';
    statusEl.textContent = text;
  }

  function hhmm(iso) {
    const d = new Date(iso);
    if (isNaN(d)) return '';
    return d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  }

  function el(tag, attrs, text) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === 'class') e.className = v;
      else if (k.includes('-') || k === 'role') e.setAttribute(k, v);
      else e[k] = v;
    }
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function button(device, action, text, extra) {
    const b = el('button', Object.assign({ type: 'button', 'data-t-action': action, 'data-room': device }, extra || {}), text);
    b.disabled = busy.has(device) || !(rooms.get(device) || {}).online;
    b.addEventListener('click', () => {
      const body = { decision: action };
      if (action === 'start_session' && startMode(device)) body.anonymise = startMode(device);
      if (extra && extra['data-request']) body.request = extra['data-request'];
      if (extra && extra['data-for']) body.for = extra['data-for'];
      if ((action === 'accept' || action === 'video_only') && talk.get(body.request)) body.talk = true;
      decide(device, body, text);
    });
    return b;
  }

  // startMode is the anonymisation mode Start recording sends for device:
  // the teacher's choice, else the box's default; none from a box that
  // does not report one (it would not understand it).
  function startMode(device) {
    const st = (rooms.get(device) || {}).state || {};
    if (!st.anonymise_default) return '';
    return startModes.get(device) || st.anonymise_default;
  }

  const modeText = { off: 'clear picture', whole: 'anonymised: faces unrecognisable', masks: 'masked areas blacked out' };

  const cooldownText = { declined: 'declined', revoked: 'viewing ended', ended: 'viewing ended' };

  function renderRoom(r) {
    const st = r.state || null;
    const li = el('li', { 'data-t-room': r.device, 'data-online': String(!!r.online), 'data-recording': String(!!(r.online && st && st.recording)) });
    const head = el('div', { class: 't-head' });
    head.append(el('span', { class: 'room-name' }, r.device));
    head.append(el('span', { class: 'online', 'data-online': String(!!r.online) }, r.online ? 'online' : 'offline'));
    li.append(head);
    if (!r.online || !st) {
      li.append(el('p', { class: 't-note' }, r.online ? 'Waiting for the box to report…' : 'The box is offline: nothing can be decided until it is back.'));
      li.append(resultLine(r.device));
      return li;
    }
    // Recording (its button sits with End all viewing, below, away from
    // the requests' buttons).
    const rec = el('div', { class: 't-rec' });
    let recButton;
    if (st.recording) {
      li.dataset.until = st.session_until || '';
      li.dataset.anonymise = st.anonymise || '';
      let text = st.session_until ? 'Recording until ' + hhmm(st.session_until) : 'Recording';
      if (st.anonymise && st.anonymise !== 'off') text += ' (' + (modeText[st.anonymise] || st.anonymise) + ')';
      rec.append(el('span', { class: 't-recording', 'data-recording': 'true' }, text));
      recButton = button(r.device, 'stop_session', 'Stop recording');
    } else {
      // A session starts with the box's own length (the receiver takes
      // no length for it) and the mode chosen here.
      rec.append(el('span', { class: 't-recording', 'data-recording': 'false' }, 'Not recording'));
      if (st.anonymise_default) {
        const chosen = startMode(r.device);
        const sel = el('select', { 'data-t-anonymise': '', 'data-room': r.device, 'aria-label': 'Picture of the next recording' });
        for (const m of ['off', 'whole', 'masks']) {
          if (m === 'masks' && !st.masks && chosen !== 'masks') continue; // the box has no rectangles
          const o = el('option', { value: m }, m + ' (' + modeText[m] + ')');
          if (m === chosen) o.setAttribute('selected', '');
          sel.append(o);
        }
        sel.disabled = busy.has(r.device);
        sel.addEventListener('change', () => { startModes.set(r.device, sel.value); render(); });
        const label = el('label', { class: 't-anon' }, 'Picture:');
        label.append(sel);
        rec.append(label);
      }
      recButton = button(r.device, 'start_session', 'Start recording');
    }
    li.append(rec);

    // Pending requests, oldest first.
    const pending = (st.pending || []).slice().sort((a, b) => Date.parse(a.asked_at) - Date.parse(b.asked_at));
    if (pending.length) {
      const ul = el('ul', { class: 't-pending' });
      for (const p of pending) {
        if (!shown.has(p.request)) shown.set(p.request, Date.now());
        const item = el('li', { 'data-t-request': p.request, 'data-viewer': p.viewer, 'data-audio': String(!!p.audio), 'data-shown': String(shown.get(p.request)) });
        item.append(el('p', { class: 't-ask' }, p.viewer + ' asks to watch' + (p.audio ? ', with sound' : ', video only') + ' (asked ' + hhmm(p.asked_at) + ')'));
        // "Coach may speak" goes with every accept of this request; the
        // choice outlives the card's redraws (kept by request id).
        const may = el('input', { type: 'checkbox', 'data-t-talk': '', 'data-request': p.request, checked: !!talk.get(p.request) });
        may.addEventListener('change', () => talk.set(p.request, may.checked));
        const label = el('label', { class: 't-talk' });
        label.append(may, document.createTextNode(' Coach may speak'));
        item.append(label);
        const row = el('div', { class: 't-buttons' });
        const req = { 'data-request': p.request };
        row.append(
          button(r.device, 'accept', 'Accept 15 min', Object.assign({ 'data-for': '15m' }, req)),
          button(r.device, 'accept', 'Accept 45 min', Object.assign({ 'data-for': '45m' }, req)),
          button(r.device, 'accept', 'Until the lesson ends', Object.assign({ 'data-for': 'lesson' }, req)));
        if (p.audio) row.append(button(r.device, 'video_only', 'Video only, 15 min', Object.assign({ 'data-for': '15m' }, req)));
        row.append(button(r.device, 'decline', 'Decline', req));
        item.append(row);
        ul.append(item);
      }
      li.append(ul);
    }

    // Who watches now.
    const watching = st.watching || [];
    const wl = el('ul', { class: 't-watching' });
    if (!watching.length) wl.append(el('li', { class: 't-none' }, 'Nobody is watching.'));
    for (const w of watching) {
      let text = w.viewer + ' is watching' + (w.audio ? ' with sound' : ', video only');
      if (w.until) text += ' until ' + hhmm(w.until);
      if (w.talk) text += w.speaking ? '; speaking now' : '; may speak';
      wl.append(el('li', { class: w.speaking ? 't-speaking' : '', 'data-t-watching': '', 'data-viewer': w.viewer, 'data-audio': String(!!w.audio), 'data-until': w.until || '', 'data-talk': String(!!w.talk), 'data-speaking': String(!!w.speaking) }, text));
    }
    li.append(wl);
    for (const c of st.cooldowns || []) {
      li.append(el('p', { class: 't-cooldown', 'data-t-cooldown': '', 'data-viewer': c.viewer, 'data-reason': c.reason, 'data-until': c.until },
        c.viewer + ': ' + (cooldownText[c.reason] || c.reason) + '; may ask again after ' + hhmm(c.until)));
    }
    const actions = el('div', { class: 't-buttons t-actions' });
    actions.append(button(r.device, 'end_all', 'End all viewing now', { class: 't-end-all' }), recButton);
    li.append(actions);
    li.append(resultLine(r.device));
    return li;
  }

  function resultLine(device) {
    const res = results.get(device);
    const p = el('p', { class: 't-result', 'data-t-result': '', 'data-room': device, role: 'status' });
    if (res) {
      p.dataset.action = res.action;
      p.dataset.outcome = res.outcome;
      p.dataset.reason = res.reason || '';
      p.textContent = res.text;
    }
    return p;
  }

  function render() {
    // Only rooms whose view changed are rebuilt, so a button keeps its
    // element while nothing about it changes.
    const seen = new Set();
    for (const r of [...rooms.values()].sort((a, b) => a.device.localeCompare(b.device))) {
      seen.add(r.device);
      const fresh = renderRoom(r);
      const old = list.querySelector('li[data-t-room="' + CSS.escape(r.device) + '"]');
      if (old) {
        if (old.isEqualNode(fresh)) continue;
        old.replaceWith(fresh);
      } else {
        list.append(fresh);
      }
    }
    for (const li of [...list.children]) if (!seen.has(li.dataset.tRoom)) li.remove();
    // Keep the order sorted after additions.
    [...list.children].sort((a, b) => a.dataset.tRoom.localeCompare(b.dataset.tRoom)).forEach((li) => list.append(li));
    noRooms.hidden = rooms.size > 0;
  }

  // What the teacher is told for each of the box's refusal reasons
  // (wire.Decision* reasons) and the receiver's own.
  const refusals = {
    'not-pending': 'the request was already decided or withdrawn',
    'unknown-request': 'the box has no such request (the coach may have stopped asking)',
    'remote-off': 'this box takes decisions only from its button or its own console (consent.remote_decisions is off)',
    'stale': 'the decision arrived too late; check the clocks of the receiver and the box',
    'replayed': 'the box saw this decision before',
    'forged': 'the box did not trust the receiver\'s signature',
    'wrong-device': 'the decision named another box',
    'malformed': 'the decision was not understood',
    'room': 'you do not answer for this room; ask an administrator',
    'role': 'this account is not a teacher account',
  };

  function outcomeText(label, status, body) {
    const reason = body.reason || '';
    if (status === 200) {
      const res = body.result || {};
      let t = label + ': done';
      if (res.viewer) t = label + ' (' + res.viewer + '): done';
      if (res.expires && body.decision !== 'decline') t += ', until ' + hhmm(res.expires);
      if (body.decision === 'end_all') t += ' (' + (res.ended || 0) + ' ended)';
      return ['ok', '', t + '.'];
    }
    if (status === 503 || reason === 'offline') return ['offline', reason || 'offline', label + ': not done, the box is offline.'];
    if (status === 401) return ['error', 'token', label + ': not done, your sign-in expired.'];
    const why = refusals[reason] || body.error || body.detail || ('error ' + status);
    if (status >= 400 && status < 500) return ['refused', reason || String(status), label + ': refused, ' + why + '.'];
    return ['error', reason || String(status), label + ': failed, ' + why + '.'];
  }

  async function decide(device, body, label) {
    const gen = generation;
    busy.add(device);
    results.set(device, { action: body.decision, outcome: 'sending', reason: '', text: label + '…' });
    render();
    let status = 0, answer = {};
    try {
      const resp = await fetch('/v1/teacher/rooms/' + encodeURIComponent(device) + '/decision', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', 'Authorization': 'Bearer ' + token },
        body: JSON.stringify(body),
      });
      status = resp.status;
      try { answer = await resp.json(); } catch (e) { /* not JSON */ }
    } catch (e) {
      status = -1;
    }
    if (gen !== generation) return;
    busy.delete(device);
    let res;
    if (status === -1) res = ['offline', 'network', label + ': not sent, the server cannot be reached.'];
    else res = outcomeText(label, status, answer);
    results.set(device, { action: body.decision, outcome: res[0], reason: res[1], text: res[2] });
    render();
    if (status === 401) end('signin-expired', 'Your sign-in expired. Sign in again.', 'token');
  }

  function setRoom(r) {
    if (r && typeof r.device === 'string') rooms.set(r.device, r);
  }

  async function loadRooms(gen) {
    const resp = await fetch('/v1/teacher/rooms', { headers: { 'Authorization': 'Bearer ' + token }, cache: 'no-store' });
    if (gen !== generation) return false;
    if (resp.status === 401) { end('signin-expired', 'Your sign-in expired. Sign in again.', 'token'); return false; }
    if (!resp.ok) {
      let b = {};
      try { b = await resp.json(); } catch (e) { /* not JSON */ }
      setStatus('error', 'The rooms cannot be shown (' + (b.reason || resp.status) + ').', b.reason || String(resp.status));
      return resp.status < 500;
    }
    const body = await resp.json();
    rooms.clear();
    for (const r of body.rooms || []) setRoom(r);
    render();
    return true;
  }

  // parseEvents takes the text read so far and returns the complete
  // events in it and the rest: Server-Sent Events, blocks separated by a
  // blank line, "event:" and "data:" fields, ":" comments.
  function parseEvents(buf) {
    const events = [];
    // CRLF and CR end lines too; a CR at the end waits for the next read,
    // which may start with its LF.
    buf = buf.replace(/\r\n|\r(?!$)/g, '\n');
    let i;
    while ((i = buf.indexOf('\n\n')) >= 0) {
      const block = buf.slice(0, i);
      buf = buf.slice(i + 2);
      let name = 'message';
      const data = [];
      for (const line of block.split('\n')) {
        if (line === '' || line.startsWith(':')) continue;
        const c = line.indexOf(':');
        const field = c < 0 ? line : line.slice(0, c);
        let value = c < 0 ? '' : line.slice(c + 1);
        if (value.startsWith(' ')) value = value.slice(1);
        if (field === 'event') name = value;
        else if (field === 'data') data.push(value);
      }
      if (data.length || name !== 'message') events.push({ name, data: data.join('\n') });
    }
    return [events, buf];
  }

  async function stream(gen) {
    let attempt = 0;
    while (gen === generation) {
      if (tokenExpires && Date.now() >= tokenExpires) { end('signin-expired', 'Your sign-in expired. Sign in again.', 'token'); return; }
      setStatus(attempt ? 'reconnecting' : 'connecting', attempt ? 'Connection lost; reconnecting…' : 'Connecting…', attempt ? 'network' : '');
      let stop = false;
      try {
        abort = new AbortController();
        const resp = await fetch('/v1/teacher/events', { headers: { 'Authorization': 'Bearer ' + token, 'Accept': 'text/event-stream' }, cache: 'no-store', signal: abort.signal });
        if (gen !== generation) return;
        if (resp.status === 401) { end('signin-expired', 'Your sign-in expired. Sign in again.', 'token'); return; }
        if (resp.status === 403) {
          let b = {};
          try { b = await resp.json(); } catch (e) { /* not JSON */ }
          setStatus('error', 'This account may not use the teacher\'s page (' + (b.reason || 403) + ').', b.reason || '403');
          return;
        }
        if (!resp.ok || !resp.body) throw new Error('status ' + resp.status);
        const reader = resp.body.getReader();
        const dec = new TextDecoder();
        let buf = '';
        setStatus('live', 'Live: requests appear here as coaches ask.', '');
        attempt = 0;
        for (;;) {
          const { value, done } = await reader.read();
          if (gen !== generation) { reader.cancel(); return; }
          if (done) break;
          let events;
          [events, buf] = parseEvents(buf + dec.decode(value, { stream: true }));
          let changed = false;
          for (const ev of events) {
            if (ev.name === 'room') {
              try { setRoom(JSON.parse(ev.data)); changed = true; } catch (e) { /* a bad event: skip */ }
            } else if (ev.name === 'expired') {
              stop = true;
            }
          }
          if (changed) render();
          if (stop) { reader.cancel(); break; }
        }
      } catch (e) {
        if (gen !== generation) return;
      }
      if (stop) { end('signin-expired', 'Your sign-in expired. Sign in again.', 'token'); return; }
      // Dropped: while reconnecting the rooms' states are not known to be
      // current, so the page says so.
      const wait = RECONNECT_MS[Math.min(attempt, RECONNECT_MS.length - 1)];
      attempt++;
      setStatus('reconnecting', 'Connection lost; reconnecting…', 'network');
      await new Promise((r) => setTimeout(r, wait));
    }
  }

  function stopAll() {
    generation++;
    if (abort) { abort.abort(); abort = null; }
    rooms.clear();
    results.clear();
    busy.clear();
    list.replaceChildren();
    token = '';
    tokenExpires = 0;
  }

  function end(state, text, reason) {
    stopAll();
    section.hidden = true;
    delete document.body.dataset.view;
    if (onEnd) onEnd(state, text, reason);
  }

  async function start(opts) {
    stopAll();
    token = opts.token;
    tokenExpires = opts.expires || 0;
    onEnd = opts.onEnd;
    document.body.dataset.view = 'teacher';
    section.hidden = false;
    who.textContent = 'Signed in as ' + opts.name + ' (' + (opts.role || 'teacher') + ')';
    setStatus('connecting', 'Connecting…', '');
    const gen = generation;
    for (let i = 0; gen === generation; i++) {
      let ok = false;
      try { ok = await loadRooms(gen); } catch (e) { /* below */ }
      if (ok || gen !== generation) break;
      setStatus('reconnecting', 'Cannot reach the server; trying again…', 'network');
      await new Promise((r) => setTimeout(r, RECONNECT_MS[Math.min(i, RECONNECT_MS.length - 1)]));
    }
    if (gen === generation && statusEl.dataset.state !== 'error') stream(gen);
  }

  document.getElementById('t-signout').addEventListener('click', () => end('signed-out', 'Signed out.', ''));
  window.teacherView = { start, parseEvents };
})();
