// Viewer page of the box's WHEP live view. Asks the teacher for consent
// with the viewer's token, waits while the request is pending, plays the
// stream once accepted and says so when the teacher ends it.
'use strict';
(() => {
  const statusEl = document.getElementById('status');
  const video = document.getElementById('video');
  const form = document.getElementById('login');
  const tokenInput = document.getElementById('token');
  const stopBtn = document.getElementById('stop');
  const RETRY_MS = 2000;
  // While the teacher decides the box holds the offer (Prefer: wait) and
  // answers the moment they accept; it says so with Preference-Applied, and
  // the page then asks again at once instead of polling. A box that does
  // not hold offers is asked again often, so the first frame still shows
  // within a few hundred milliseconds of the accept.
  const PENDING_MS = 250;
  const POLL_MS = 400;

  let token = '';
  let pc = null;
  let resource = null; // the session's URL (the WHEP Location)
  let retryTimer = null;
  let pollTimer = null;
  let generation = 0; // bumps on every start/stop so stale callbacks do nothing

  function setState(state, text, reason) {
    statusEl.dataset.state = state;
    statusEl.dataset.reason = reason || '';
    statusEl.textContent = text;
  }

  function clearTimers() {
    clearTimeout(retryTimer);
    clearTimeout(pollTimer);
    retryTimer = pollTimer = null;
  }

  function closePC() {
    if (pc) { pc.close(); pc = null; }
    window.whep.pc = null;
    video.srcObject = null;
  }

  function waitGathering(p, ms) {
    if (p.iceGatheringState === 'complete') return Promise.resolve();
    return new Promise((resolve) => {
      const t = setTimeout(resolve, ms);
      p.addEventListener('icegatheringstatechange', () => {
        if (p.iceGatheringState === 'complete') { clearTimeout(t); resolve(); }
      });
    });
  }

  function run(gen) {
    attempt(gen).catch((e) => {
      if (gen === generation) setState('error', 'Live view failed: ' + e, 'error');
    });
  }

  async function attempt(gen) {
    if (gen !== generation) return;
    const p = new RTCPeerConnection();
    p.addTransceiver('video', { direction: 'recvonly' });
    p.addTransceiver('audio', { direction: 'recvonly' });
    const stream = new MediaStream();
    p.ontrack = (ev) => {
      stream.addTrack(ev.track);
      // Setting srcObject reloads the element, even to the same stream.
      if (video.srcObject !== stream) video.srcObject = stream;
    };
    await p.setLocalDescription(await p.createOffer());
    await waitGathering(p, 1000);
    let resp;
    const sent = Date.now();
    try {
      resp = await fetch('/whep', {
        method: 'POST',
        // While the teacher decides, the box holds the offer (up to 20 s) and
        // answers the moment they accept.
        headers: { 'Content-Type': 'application/sdp', 'Authorization': 'Bearer ' + token, 'Prefer': 'wait=20' },
        body: p.localDescription.sdp,
      });
    } catch (e) {
      p.close();
      if (gen !== generation) return;
      setState('error', 'Cannot reach the box; retrying…', 'network');
      retryTimer = setTimeout(() => run(gen), RETRY_MS);
      return;
    }
    if (gen !== generation) { p.close(); return; }
    if (resp.status === 201) {
      pc = p;
      window.whep.pc = p;
      resource = new URL(resp.headers.get('Location'), window.location.href).toString();
      await p.setRemoteDescription({ type: 'answer', sdp: await resp.text() });
      setState('playing', 'Live.', '');
      pollTimer = setTimeout(() => poll(gen), POLL_MS);
      return;
    }
    p.close();
    let body = {};
    try { body = await resp.json(); } catch (e) { /* not JSON */ }
    const reason = body.reason || String(resp.status);
    if (resp.status === 401) {
      setState('error', 'The token was refused. Log in again and paste a new token.', reason);
      stopBtn.hidden = true;
      return;
    }
    if (resp.status === 403 && reason === 'pending') {
      setState('waiting', 'Waiting for the teacher to accept…', reason);
      // The box held the offer: ask again at once (a long poll); at most
      // every PENDING_MS all the same, should it answer early.
      const held = /(^|,)\s*wait=/.test(resp.headers.get('Preference-Applied') || '');
      const delay = held ? Math.max(0, PENDING_MS - (Date.now() - sent)) : PENDING_MS;
      retryTimer = setTimeout(() => run(gen), delay);
      return;
    } else if (resp.status === 403 && reason === 'denied') {
      setState('error', 'The teacher declined the live view.', reason);
      stopBtn.hidden = true;
      return;
    } else {
      setState('error', 'Live view unavailable (' + reason + '); retrying…', reason);
    }
    retryTimer = setTimeout(() => run(gen), RETRY_MS);
  }

  // poll asks the box whether the session is still live; 410 means the
  // grant ended (the teacher stopped it, it expired, or recording ended).
  async function poll(gen) {
    if (gen !== generation) return;
    const ended = await checkEnded(gen);
    if (!ended && gen === generation) pollTimer = setTimeout(() => poll(gen), POLL_MS);
  }

  // checkEnded ends the page's session unless the box still reports it
  // live. A lost connection alone is not the end: the box closes the
  // session itself when its side fails, and the poll then sees 410.
  async function checkEnded(gen) {
    let resp = null;
    try {
      resp = await fetch(resource, { headers: { 'Authorization': 'Bearer ' + token }, cache: 'no-store' });
    } catch (e) { /* network error: try again on the next poll */ }
    if (gen !== generation) return true;
    if (!resp || resp.status === 200) return false;
    let reason = 'ended';
    try { reason = (await resp.json()).reason || reason; } catch (e) { /* keep */ }
    if (gen !== generation) return true;
    generation++;
    clearTimers();
    closePC();
    resource = null;
    stopBtn.hidden = true;
    setState('ended', 'The teacher ended the live view.', reason);
    return true;
  }

  async function stop() {
    const loc = resource;
    generation++;
    clearTimers();
    closePC();
    resource = null;
    stopBtn.hidden = true;
    setState('idle', 'Stopped.', '');
    if (loc) {
      try { await fetch(loc, { method: 'DELETE', keepalive: true, headers: { 'Authorization': 'Bearer ' + token } }); } catch (e) { /* gone */ }
    }
  }

  function start(t) {
    token = t.trim();
    if (!token) return;
    generation++;
    clearTimers();
    closePC();
    stopBtn.hidden = false;
    setState('waiting', 'Asking the teacher…', 'asking');
    run(generation);
  }

  window.whep = { pc: null, start, stop };
  form.addEventListener('submit', (ev) => { ev.preventDefault(); start(tokenInput.value); });
  stopBtn.addEventListener('click', stop);
  window.addEventListener('pagehide', () => { if (resource) stop(); });

  const m = /(?:^#|&)token=([^&]+)/.exec(window.location.hash);
  if (m) {
    const t = decodeURIComponent(m[1]);
    tokenInput.value = t;
    history.replaceState(null, '', window.location.pathname + window.location.search);
    start(t);
  }
})();
