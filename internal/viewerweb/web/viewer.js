// Live-view page, served by the box on its LAN (body data-site="box": the
// viewer pastes a viewer token) and by the receiver to coaches
// (data-site="coach": sign in, pick a room, ask to watch; the offer goes
// through the receiver's relay to the box). It asks the teacher for
// consent, waits while the request is pending, plays the stream once
// accepted and says why it ended. #status carries the page's state in
// data-state (stable, for tests): signed-out, signin-failed, rooms, idle,
// waiting, declined, playing, ended (the teacher ended it), grant-expired,
// lesson-ended, replaced, no-lesson, signin-expired, offline (the box),
// network (the server), error; teacher while a teacher's account is
// signed in (teacher.js shows the teacher's view).
//
// Push-to-talk (#talk, docs/daemon.md "Talk-back"): the offer always
// carries a sendrecv audio section with no track; when the box's answer
// says "Talk: allowed" the button shows, and while it is held (pointer,
// touch, or Space) the microphone (asked for once, on the first press)
// is attached with replaceTrack(track); on release replaceTrack(null), so
// nothing is sent while it is up. #talk data-talk: off (hidden), idle
// ("Hold to talk"), talking ("Talking…"), taken ("Another coach is
// speaking": the box plays someone else), not-allowed ("Talk not
// allowed": the grant does not include talk); #talk-note says why the
// microphone could not be used (data-reason: refused, missing,
// insecure, error).
'use strict';
(() => {
  const coach = document.body.dataset.site === 'coach';
  const statusEl = document.getElementById('status');
  const video = document.getElementById('video');
  const stopBtn = document.getElementById('stop');
  const talkBtn = document.getElementById('talk');
  const talkNote = document.getElementById('talk-note');
  const RETRY_MS = 2000;
  // While the teacher decides the box holds the offer (Prefer: wait) and
  // answers the moment they accept; it says so with Preference-Applied, and
  // the page then asks again at once instead of polling. A box that does
  // not hold offers is asked again often, so the first frame still shows
  // within a few hundred milliseconds of the accept.
  const PENDING_MS = 250;
  const POLL_MS = 400;
  const ROOMS_MS = 5000;

  let token = '';
  let tokenExpires = 0; // ms since the epoch; 0: not known (a pasted token)
  let endpoint = '/whep'; // the WHEP endpoint: the box's, or a room's relay
  let room = '';
  let iceServers = []; // the room's STUN/TURN servers (coach page, TURN on)
  let pc = null;
  let resource = null; // the session's URL (the WHEP Location)
  let retryTimer = null;
  let pollTimer = null;
  let generation = 0; // bumps on every start/stop so stale callbacks do nothing
  let busy = false; // asking or watching
  // Talk-back of the running view.
  let talkSender = null; // the audio transceiver's sender, once answered
  let talkGrant = ''; // the box's Talk header: allowed, not-granted, unavailable; '' unknown
  let floor = 'free'; // the session's floor: free, yours, taken
  let holding = false; // the button is held
  let holdGen = 0; // bumps on every press and release
  let mic = null; // the microphone's track, once given

  function setState(state, text, reason) {
    statusEl.dataset.state = state;
    statusEl.dataset.reason = reason || '';
    if (state !== 'playing') delete statusEl.dataset.ends;
    statusEl.textContent = text;
    showTalk();
    if (coach) showControls();
  }

  // showTalk shows the push-to-talk button as the view's talk-back stands.
  function showTalk() {
    let state = 'off', text = 'Hold to talk';
    if (statusEl.dataset.state === 'playing' && talkSender) {
      if (talkGrant === 'allowed') {
        state = 'idle';
        if (floor === 'taken') { state = 'taken'; text = 'Another coach is speaking'; }
        else if (holding) { state = 'talking'; text = 'Talking…'; }
      } else if (talkGrant === 'not-granted') {
        state = 'not-allowed';
        text = 'Talk not allowed';
      }
    }
    talkBtn.dataset.talk = state;
    talkBtn.hidden = state === 'off';
    talkBtn.disabled = state === 'not-allowed';
    talkBtn.setAttribute('aria-pressed', String(state === 'talking'));
    if (talkBtn.textContent !== text) talkBtn.textContent = text;
    if (state === 'off' || state === 'not-allowed') talkNote.hidden = true;
  }

  function noteTalk(reason, text) {
    talkNote.dataset.reason = reason;
    talkNote.textContent = text;
    talkNote.hidden = !text;
  }

  // microphone asks for the microphone on the first press (the browser
  // asks the coach once) and says clearly when it cannot be had.
  async function microphone() {
    if (mic && mic.readyState === 'live') return mic;
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      noteTalk('insecure', 'This page cannot use a microphone here (it needs HTTPS).');
      return null;
    }
    try {
      const ms = await navigator.mediaDevices.getUserMedia({ audio: true, video: false });
      mic = ms.getAudioTracks()[0] || null;
    } catch (e) {
      mic = null;
      if (e && (e.name === 'NotAllowedError' || e.name === 'SecurityError')) {
        noteTalk('refused', 'The microphone was refused: allow it for this site in the browser\'s settings, then hold the button again.');
      } else if (e && (e.name === 'NotFoundError' || e.name === 'OverconstrainedError')) {
        noteTalk('missing', 'No microphone was found: plug one in, then hold the button again.');
      } else {
        noteTalk('error', 'The microphone could not be opened (' + ((e && e.name) || e) + ').');
      }
      return null;
    }
    noteTalk('', '');
    return mic;
  }

  async function pressTalk() {
    if (holding || talkBtn.hidden || talkBtn.disabled) return;
    holding = true;
    const gen = ++holdGen;
    const sender = talkSender;
    showTalk();
    const track = await microphone();
    if (gen !== holdGen || sender !== talkSender) return; // released, or the view changed
    if (!track) { holding = false; showTalk(); return; }
    try { await sender.replaceTrack(track); } catch (e) { /* the view closed */ }
  }

  function releaseTalk() {
    if (!holding) return;
    holding = false;
    holdGen++;
    // Queued after any replaceTrack(track) of the press: the last word.
    if (talkSender) talkSender.replaceTrack(null).catch(() => {});
    showTalk();
  }

  // endTalk forgets the view's talk-back and lets the microphone go.
  function endTalk() {
    holding = false;
    holdGen++;
    talkSender = null;
    talkGrant = '';
    floor = 'free';
    if (mic) { mic.stop(); mic = null; }
  }

  function clearTimers() {
    clearTimeout(retryTimer);
    clearTimeout(pollTimer);
    retryTimer = pollTimer = null;
  }

  function closePC() {
    endTalk();
    if (pc) { pc.close(); pc = null; }
    window.whep.pc = null;
    video.srcObject = null;
  }

  function tokenExpired() { return tokenExpires > 0 && Date.now() >= tokenExpires; }

  // finish ends what the page was doing and shows why.
  function finish(state, text, reason) {
    busy = false;
    generation++;
    clearTimers();
    closePC();
    resource = null;
    stopBtn.hidden = true;
    setState(state, text, reason);
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

  function retry(gen, ms) {
    if (gen === generation) retryTimer = setTimeout(() => { retryTimer = null; run(gen); }, ms);
  }

  function offlineText() {
    return coach ? 'The box in ' + room + ' is offline; trying again…' : 'Cannot reach the box; trying again…';
  }

  function signinExpired() {
    token = '';
    tokenExpires = 0;
    finish('signin-expired', coach ? 'Your sign-in expired. Sign in again.' : 'The viewer token was refused or has expired. Get a new one.', 'token');
  }

  async function attempt(gen) {
    if (gen !== generation) return;
    if (tokenExpired()) { signinExpired(); return; }
    const p = new RTCPeerConnection({ iceServers });
    p.addTransceiver('video', { direction: 'recvonly' });
    // Hear the room and, if the grant allows, speak: no track until the
    // push-to-talk button is held (no microphone is asked for to offer).
    const audio = p.addTransceiver('audio', { direction: 'sendrecv' });
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
      resp = await fetch(endpoint, {
        method: 'POST',
        // While the teacher decides, the box holds the offer (up to 20 s) and
        // answers the moment they accept.
        headers: { 'Content-Type': 'application/sdp', 'Authorization': 'Bearer ' + token, 'Prefer': 'wait=20' },
        body: p.localDescription.sdp,
      });
    } catch (e) {
      p.close();
      if (gen !== generation) return;
      if (coach) setState('network', 'Cannot reach the server; trying again…', 'network');
      else setState('offline', offlineText(), 'network');
      retry(gen, RETRY_MS);
      return;
    }
    if (gen !== generation) { p.close(); return; }
    if (resp.status === 201) {
      pc = p;
      window.whep.pc = p;
      resource = new URL(resp.headers.get('Location'), window.location.href).toString();
      await p.setRemoteDescription({ type: 'answer', sdp: await resp.text() });
      if (gen !== generation) return;
      // The box takes the viewer's audio only when it says so (and its
      // answer lets the browser send).
      const dir = audio.currentDirection || '';
      talkGrant = (resp.headers.get('Talk') || '').trim();
      if (talkGrant === 'allowed' && dir !== 'sendrecv' && dir !== 'sendonly') talkGrant = 'unavailable';
      talkSender = audio.sender;
      setState('playing', coach ? 'Watching ' + room + '.' : 'Live.', '');
      poll(gen); // at once: the status says until when
      return;
    }
    p.close();
    let body = {};
    try { body = await resp.json(); } catch (e) { /* not JSON */ }
    if (gen !== generation) return;
    const reason = body.reason || String(resp.status);
    if (resp.status === 401) {
      signinExpired();
      return;
    }
    if (resp.status === 403) {
      switch (reason) {
        case 'pending': {
          setState('waiting', 'Waiting for the teacher to accept…', reason);
          // The box held the offer: ask again at once (a long poll); at most
          // every PENDING_MS all the same, should it answer early.
          const held = /(^|,)\s*wait=/.test(resp.headers.get('Preference-Applied') || '');
          retry(gen, held ? Math.max(0, PENDING_MS - (Date.now() - sent)) : PENDING_MS);
          return;
        }
        // The teacher's no holds for a while (the box's cooldown): the
        // page says so and does not ask again by itself.
        case 'declined':
        case 'denied':
          finish('declined', 'The teacher declined the live view. You can ask again later.', reason);
          return;
        case 'revoked':
        case 'ended':
          finish('ended', 'The teacher ended the live view. You can ask again later.', reason);
          return;
        case 'no session':
          // Asked again until a lesson starts (or the viewer stops): a box
          // that restarted has no lesson until the teacher starts one.
          setState('no-lesson', 'No lesson is being recorded here now; asking again when one starts…', reason);
          retry(gen, RETRY_MS);
          return;
        case 'room':
          finish('error', 'You may not watch this room: ask an administrator.', reason);
          return;
        case 'indicator':
          finish('error', 'The room\'s privacy light does not work, so live view is refused.', reason);
          return;
      }
    }
    if (resp.status === 503 && reason === 'offline') {
      setState('offline', offlineText(), reason);
    } else {
      setState('error', 'Live view unavailable (' + reason + '); trying again…', reason);
    }
    retry(gen, RETRY_MS);
  }

  // endText says why a session ended, from the box's reason.
  function endText(reason) {
    switch (reason) {
      case 'revoked':
      case 'ended': // the teacher ended all viewing
        return ['ended', 'The teacher ended the live view.'];
      case 'expired':
        return ['grant-expired', 'The time the teacher allowed for watching is over.'];
      case 'session ended':
      case 'recording ended':
      case 'not recording':
        return ['lesson-ended', 'The lesson ended.'];
      case 'replaced':
        return ['replaced', 'You opened this live view somewhere else.'];
      case 'viewer left':
        return ['idle', 'Stopped.'];
      case 'connection failed':
      case 'connect timeout':
        return ['error', 'The connection to the box failed (' + reason + '): the network between you and the box may block it.'];
      default:
        return ['error', 'The live view stopped (' + reason + ').'];
    }
  }

  // poll asks the box whether the session is still live: 200 carries the
  // grant's end, 410 the reason the session ended. A box gone offline (503
  // from the relay, or no answer) or restarted (404: it does not know the
  // session) is asked again, so the view comes back by itself.
  async function poll(gen) {
    if (gen !== generation) return;
    let resp = null;
    try {
      resp = await fetch(resource, { headers: { 'Authorization': 'Bearer ' + token }, cache: 'no-store' });
    } catch (e) { /* no answer: below */ }
    if (gen !== generation) return;
    let body = {};
    if (resp) {
      try { body = await resp.json(); } catch (e) { /* not JSON */ }
      if (gen !== generation) return;
    }
    if (resp && resp.status === 200) {
      if (talkSender) {
        // The talk-back of the session as the box tells it now.
        if (body.talk === true && talkGrant !== 'unavailable') talkGrant = 'allowed';
        else if (body.talk === false && talkGrant === 'allowed') { talkGrant = 'not-granted'; releaseTalk(); }
        floor = body.floor || 'free';
        showTalk();
      }
      if (body.expires) {
        const ends = new Date(body.expires);
        statusEl.dataset.ends = body.expires;
        const at = ends.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
        statusEl.textContent = (coach ? 'Watching ' + room : 'Watching') + ' until ' + at + '.';
      }
      pollTimer = setTimeout(() => poll(gen), POLL_MS);
      return;
    }
    const reason = body.reason || '';
    // The box stopping (its live view or consent ledger closed) is the
    // box going offline, not an end the teacher or the lesson made: the
    // page asks again.
    const boxStopped = reason === 'server closed' || reason === 'ledger closed';
    if (resp && resp.status === 410 && !boxStopped) {
      const [state, text] = endText(reason || 'ended');
      finish(state, text, reason || 'ended');
      return;
    }
    if (resp && (resp.status === 502 || resp.status === 504)) {
      pollTimer = setTimeout(() => poll(gen), POLL_MS); // the relay's hiccup
      return;
    }
    if (resp && resp.status === 401) { signinExpired(); return; }
    // Offline (503, no answer, the box stopping) or restarted (404: the
    // box does not know the session): the view is lost; ask again until
    // the box answers.
    const lostGen = ++generation;
    clearTimers();
    closePC();
    resource = null;
    if (!resp || resp.status === 503 || boxStopped) {
      setState('offline', offlineText(), reason || 'network');
      retry(lostGen, RETRY_MS);
    } else {
      setState('waiting', 'Waiting for the teacher to accept…', 'asking');
      retry(lostGen, 0);
    }
  }

  async function stop() {
    const loc = resource;
    finish('idle', 'Stopped.', '');
    if (loc) {
      try { await fetch(loc, { method: 'DELETE', keepalive: true, headers: { 'Authorization': 'Bearer ' + token } }); } catch (e) { /* gone */ }
    }
    if (coach && tokenExpired()) signinExpired();
  }

  function start() {
    generation++;
    clearTimers();
    closePC();
    resource = null;
    busy = true;
    stopBtn.hidden = false;
    // The box makes the request and holds the offer while the teacher
    // decides: from here on the page waits for the teacher.
    setState('waiting', 'Waiting for the teacher to accept…', 'asking');
    run(generation);
  }

  window.whep = { pc: null, start: (t) => { token = (t || '').trim(); if (token) start(); }, stop };
  stopBtn.addEventListener('click', stop);
  // Push-to-talk: held with a pointer (mouse, touch, pen: captured, so a
  // finger sliding off does not end it) or with Space.
  talkBtn.addEventListener('pointerdown', (ev) => {
    if (ev.button !== 0) return;
    ev.preventDefault();
    try { talkBtn.setPointerCapture(ev.pointerId); } catch (e) { /* not capturable */ }
    pressTalk();
  });
  for (const name of ['pointerup', 'pointercancel', 'lostpointercapture']) talkBtn.addEventListener(name, releaseTalk);
  talkBtn.addEventListener('contextmenu', (ev) => ev.preventDefault());
  talkBtn.addEventListener('click', (ev) => ev.preventDefault());
  const spaceTarget = (t) => t === talkBtn || t === document.body || t === document.documentElement || t === video;
  document.addEventListener('keydown', (ev) => {
    if (ev.code !== 'Space' || !spaceTarget(ev.target) || talkBtn.hidden) return;
    ev.preventDefault();
    if (!ev.repeat) pressTalk();
  });
  document.addEventListener('keyup', (ev) => {
    if (ev.code !== 'Space' || !spaceTarget(ev.target)) return;
    ev.preventDefault();
    releaseTalk();
  });
  // A key or pointer lifted elsewhere, or the page hidden, ends talking.
  window.addEventListener('blur', releaseTalk);
  document.addEventListener('visibilitychange', () => { if (document.hidden) releaseTalk(); });
  window.addEventListener('pagehide', () => { if (resource) stop(); });

  if (!coach) {
    const form = document.getElementById('login');
    const tokenInput = document.getElementById('token');
    form.addEventListener('submit', (ev) => { ev.preventDefault(); window.whep.start(tokenInput.value); });
    const m = /(?:^#|&)token=([^&]+)/.exec(window.location.hash);
    if (m) {
      const t = decodeURIComponent(m[1]);
      tokenInput.value = t;
      history.replaceState(null, '', window.location.pathname + window.location.search);
      window.whep.start(t);
    }
    return;
  }

  // The coach's page: sign in (POST /v1/login), list the rooms this
  // viewer may watch (GET /v1/rooms), ask for one through the relay.
  const signinForm = document.getElementById('signin');
  const nameInput = document.getElementById('name');
  const passwordInput = document.getElementById('password');
  const roomsEl = document.getElementById('rooms');
  const roomList = document.getElementById('room-list');
  const noRooms = document.getElementById('no-rooms');
  const who = document.getElementById('who');
  let viewer = '';
  let roomsTimer = null;
  let expiryTimer = null;

  // showControls shows the sign-in form or the rooms, and offers "Ask to
  // watch" only while the page neither asks nor watches and the sign-in
  // is still valid.
  function showControls() {
    const signedIn = token !== '' && !tokenExpired();
    signinForm.hidden = signedIn;
    roomsEl.hidden = !signedIn;
    for (const b of roomList.querySelectorAll('button.ask')) b.disabled = busy || !signedIn;
  }

  function renderRooms(list) {
    roomList.replaceChildren();
    for (const r of list) {
      // A view asked for again (the box was offline) takes fresh
      // credentials.
      if (r.name === room) iceServers = r.ice_servers || [];
      const li = document.createElement('li');
      li.dataset.room = r.name;
      const name = document.createElement('span');
      name.className = 'room-name';
      name.textContent = r.name;
      const online = document.createElement('span');
      online.className = 'online';
      online.dataset.online = String(!!r.online);
      online.textContent = r.online ? 'online' : 'offline';
      // Whether a lesson is being recorded, when the box tells.
      if (r.online && typeof r.recording === 'boolean') {
        online.dataset.recording = String(r.recording);
        online.textContent = r.recording ? 'online, recording' : 'online, not recording';
      }
      const ask = document.createElement('button');
      ask.type = 'button';
      ask.className = 'ask';
      ask.dataset.room = r.name;
      ask.textContent = 'Ask to watch';
      ask.addEventListener('click', () => askRoom(r.name, r.ice_servers || []));
      li.append(name, online, ask);
      roomList.append(li);
    }
    noRooms.hidden = list.length > 0;
    showControls();
  }

  async function loadRooms() {
    clearTimeout(roomsTimer);
    if (!token) return;
    if (tokenExpired()) { if (!busy) signinExpired(); return; }
    try {
      const resp = await fetch('/v1/rooms', { headers: { 'Authorization': 'Bearer ' + token }, cache: 'no-store' });
      if (resp.status === 401) { if (!busy) signinExpired(); return; }
      if (resp.ok) renderRooms((await resp.json()).rooms || []);
    } catch (e) { /* the next round */ }
    if (token) roomsTimer = setTimeout(loadRooms, ROOMS_MS);
  }

  function askRoom(name, ice) {
    if (tokenExpired()) { signinExpired(); return; }
    room = name;
    iceServers = ice;
    endpoint = '/v1/rooms/' + encodeURIComponent(name) + '/whep';
    start();
  }

  // The token's end: a page that neither asks nor watches then says the
  // sign-in expired; a running view goes on (it is bound to the grant).
  function watchExpiry() {
    clearTimeout(expiryTimer);
    if (!tokenExpires) return;
    expiryTimer = setTimeout(() => {
      if (!busy) signinExpired();
      else showControls();
    }, Math.max(0, tokenExpires - Date.now()) + 50);
  }

  signinForm.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    setState('signed-out', 'Signing in…', 'signing-in');
    let resp;
    try {
      resp = await fetch('/v1/login', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ name: nameInput.value.trim(), password: passwordInput.value }),
      });
    } catch (e) {
      setState('signin-failed', 'Cannot reach the server. Try again.', 'network');
      return;
    }
    let body = {};
    try { body = await resp.json(); } catch (e) { /* not JSON */ }
    if (resp.status !== 200 || !body.token) {
      const reason = body.reason || String(resp.status);
      let text = 'Sign-in failed (' + (body.error || resp.status) + ').';
      if (resp.status === 401) text = 'Wrong name or password.';
      else if (resp.status === 423) text = 'This account is locked after repeated failed sign-ins: ask an administrator to unlock it.';
      else if (resp.status === 429 || resp.status === 503) text = 'Too many sign-ins just now: wait a moment and try again.';
      setState('signin-failed', text, reason);
      return;
    }
    passwordInput.value = '';
    if ((body.role === 'teacher' || body.role === 'admin') && window.teacherView) {
      // A teacher's (or an administrator's) account: teacher.js shows the rooms they answer for
      // and hands the page back here when they sign out or the sign-in
      // expires.
      signinForm.hidden = true;
      statusEl.dataset.state = 'teacher';
      statusEl.dataset.reason = '';
      statusEl.textContent = '';
      // An administrator's account also sees the fleet (fleet.js), above
      // the rooms; signing out of one ends both.
      if (body.role === 'admin' && window.fleetView) window.fleetView.start({ token: body.token });
      window.teacherView.start({
        token: body.token, name: nameInput.value.trim(), role: body.role, expires: Date.parse(body.expires) || 0,
        onEnd: (state, text, reason) => {
          if (window.fleetView) window.fleetView.stop();
          setState(state, text, reason);
        },
      });
      return;
    }
    token = body.token;
    viewer = nameInput.value.trim();
    tokenExpires = Date.parse(body.expires) || 0;
    who.textContent = 'Signed in as ' + viewer;
    setState('rooms', 'Pick a room and ask the teacher to watch.', '');
    watchExpiry();
    loadRooms();
  });

  document.getElementById('signout').addEventListener('click', async () => {
    await stop();
    token = '';
    tokenExpires = 0;
    clearTimeout(roomsTimer);
    clearTimeout(expiryTimer);
    roomList.replaceChildren();
    setState('signed-out', 'Signed out.', '');
  });
  showControls();
})();
