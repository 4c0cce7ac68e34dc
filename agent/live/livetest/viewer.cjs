// Opens the live-view page (the box's or the receiver's coach page) in
// Debian's Chromium through playwright-core and reports, as one JSON line
// per change, the page's status (#status data-state, data-reason,
// data-ends, text), the rooms listed, whether the sign-in form shows, the
// page's scroll width, how often it loaded, the video frames the browser
// decoded (getStats inbound-rtp framesDecoded) and the candidate types of
// the selected ICE pair, the teacher's view (teacher.js's data-t-*
// attributes) and the administrator's fleet (fleet.js's) when they show. Each line of stdin
// is a command, {"id":N,"op":"fill"|"click"|"select"|"screenshot"|"down"|"up"|
// "keydown"|"keyup"|"touchstart"|"touchend","sel":…,
// "value":…,"path":…}, answered by {"ack":N,"error":…}. It runs until its
// stdin closes. VIEWPORT=WxH sets the window size. Usage: node viewer.cjs URL
const { chromium } = require('playwright-core');

const limit = Number(process.env.VIEWER_TIMEOUT_MS || 120000);
const deadline = setTimeout(() => { console.error('viewer.cjs: timed out'); process.exit(2); }, limit);

let quit = false;
const commands = [];
let pending = '';
process.stdin.on('data', (d) => {
  pending += d;
  let i;
  while ((i = pending.indexOf('\n')) >= 0) {
    const line = pending.slice(0, i);
    pending = pending.slice(i + 1);
    if (line.trim()) commands.push(JSON.parse(line));
  }
});
process.stdin.on('end', () => { quit = true; });

let cdpSession = null;
let touchAt = null;
async function cdp(page) {
  if (!cdpSession) cdpSession = await page.context().newCDPSession(page);
  return cdpSession;
}

async function run(page, c) {
  switch (c.op) {
    case 'fill': await page.fill(c.sel, c.value, { timeout: 5000 }); break;
    case 'click': await page.click(c.sel, { timeout: 5000 }); break;
    case 'select': await page.selectOption(c.sel, c.value, { timeout: 5000 }); break;
    case 'screenshot': await page.screenshot({ path: c.path, fullPage: true }); break;
    // Hold and release: the mouse pressed on the element, or a key pressed
    // (c.value, e.g. "Space") on the page.
    case 'down': await page.hover(c.sel, { timeout: 5000 }); await page.mouse.down(); break;
    case 'up': await page.mouse.up(); break;
    // A finger held on the element's centre and lifted (touch events
    // through the DevTools protocol: pointer events of type touch).
    case 'touchstart': {
      const box = await page.locator(c.sel).boundingBox({ timeout: 5000 });
      if (!box) throw new Error('no box for ' + c.sel);
      touchAt = { x: box.x + box.width / 2, y: box.y + box.height / 2 };
      await (await cdp(page)).send('Input.dispatchTouchEvent', { type: 'touchStart', touchPoints: [touchAt] });
      break;
    }
    case 'touchend': await (await cdp(page)).send('Input.dispatchTouchEvent', { type: 'touchEnd', touchPoints: [] }); break;
    case 'keydown': await page.keyboard.down(c.value); break;
    case 'keyup': await page.keyboard.up(c.value); break;
    default: throw new Error('unknown op ' + c.op);
  }
}

(async () => {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--autoplay-policy=no-user-gesture-required',
      // This machine has no sound card: a fake audio sink keeps Chromium from
      // stalling the page while it looks for one.
      '--disable-audio-output',
      '--disable-features=WebRtcHideLocalIpsWithMdns',
      // Extra flags, one per line (a fake microphone for talk-back).
      ...(process.env.CHROMIUM_ARGS || '').split('\n').filter((a) => a)],
  });
  try {
    const opts = { ignoreHTTPSErrors: true };
    const vp = /^(\d+)x(\d+)$/.exec(process.env.VIEWPORT || '');
    if (vp) opts.viewport = { width: Number(vp[1]), height: Number(vp[2]) };
    const context = await browser.newContext(opts);
    const page = await context.newPage();
    page.on('pageerror', (e) => console.error('page error: ' + e));
    let loads = 0;
    page.on('load', () => { loads++; });
    await page.goto(process.argv[2]);
    let last = '';
    while (!quit) {
      while (commands.length > 0) {
        const c = commands.shift();
        let error = '';
        try { await run(page, c); } catch (e) { error = String(e); }
        console.log(JSON.stringify({ ack: c.id, error }));
      }
      const s = await page.evaluate(async () => {
        const el = document.getElementById('status');
        const video = document.querySelector('video');
        if (video && !window.__watching && video.requestVideoFrameCallback) {
          window.__watching = true;
          video.requestVideoFrameCallback((now, md) => {
            window.__first = performance.timeOrigin + md.presentationTime;
            window.__before = md.presentedFrames - 1;
          });
        }
        if (window.whep && window.whep.pc) window.__pc = window.whep.pc;
        let frames = window.__frames || 0;
        let pair = window.__pair || { local: '', remote: '' };
        if (window.__pc) {
          try {
            const stats = await window.__pc.getStats();
            stats.forEach((r) => {
              if (r.type === 'inbound-rtp' && r.kind === 'video') frames = r.framesDecoded || 0;
              if (r.type === 'transport' && r.selectedCandidatePairId) {
                const p = stats.get(r.selectedCandidatePairId);
                const l = p && stats.get(p.localCandidateId), m = p && stats.get(p.remoteCandidateId);
                if (l && m) pair = { local: l.candidateType, remote: m.candidateType };
              }
            });
          } catch (e) { /* a closed connection keeps its last count */ }
        }
        window.__frames = frames;
        window.__pair = pair;
        const rooms = [...document.querySelectorAll('#room-list li')].map((li) => {
          const b = li.querySelector('button.ask');
          const o = li.querySelector('.online');
          return { name: li.dataset.room, online: !!o && o.dataset.online === 'true', recording: (o && o.dataset.recording) || '', ask: !!b && !b.disabled && b.offsetParent !== null };
        });
        let teacher = null;
        const ts = document.getElementById('t-status');
        const tsec = document.getElementById('teacher');
        if (ts && tsec && !tsec.hidden) {
          const rooms = [...document.querySelectorAll('li[data-t-room]')].map((li) => {
            const res = li.querySelector('[data-t-result]');
            const mode = li.querySelector('select[data-t-anonymise]');
            return {
              device: li.dataset.tRoom, online: li.dataset.online === 'true', recording: li.dataset.recording === 'true',
              until: li.dataset.until || '',
              pending: [...li.querySelectorAll('li[data-t-request]')].map((e) => {
                const may = e.querySelector('input[data-t-talk]');
                return { request: e.dataset.tRequest, viewer: e.dataset.viewer, audio: e.dataset.audio === 'true', shown: Number(e.dataset.shown || 0), talk: may ? may.checked : null };
              }),
              watching: [...li.querySelectorAll('li[data-t-watching]')].map((e) => ({
                viewer: e.dataset.viewer, audio: e.dataset.audio === 'true', until: e.dataset.until || '',
                talk: e.dataset.talk === 'true', speaking: e.dataset.speaking === 'true', text: e.textContent,
              })),
              cooldowns: [...li.querySelectorAll('[data-t-cooldown]')].map((e) => ({ viewer: e.dataset.viewer, reason: e.dataset.reason })),
              result: res ? { action: res.dataset.action || '', outcome: res.dataset.outcome || '', reason: res.dataset.reason || '', text: res.textContent } : null,
              anonymise: li.dataset.anonymise || '', recText: (li.querySelector('.t-recording') || {}).textContent || '',
              startMode: mode ? mode.value : '', startModes: mode ? [...mode.options].map((o) => o.value) : [],
            };
          });
          teacher = { state: ts.dataset.state, reason: ts.dataset.reason || '', text: ts.textContent, rooms };
        }
        let fleet = null;
        const fs = document.getElementById('f-status');
        const fsec = document.getElementById('fleet');
        if (fs && fsec && !fsec.hidden) {
          const boxes = [...document.querySelectorAll('tr[data-f-box]')].map((tr) => ({
            device: tr.dataset.fBox, health: tr.dataset.health, online: tr.dataset.online === 'true', text: tr.textContent,
            alerts: [...tr.querySelectorAll('li[data-f-alert]')].map((li) => li.dataset.kind),
          }));
          fleet = { state: fs.dataset.state, text: fs.textContent, boxes };
        }
        const form = document.getElementById('signin');
        const tb = document.getElementById('talk');
        const tn = document.getElementById('talk-note');
        let talk = null;
        if (tb) {
          let sent = 0;
          if (window.__pc) {
            try {
              (await window.__pc.getStats()).forEach((r) => { if (r.type === 'outbound-rtp' && r.kind === 'audio') sent = r.packetsSent || 0; });
            } catch (e) { /* closed */ }
          }
          talk = {
            state: tb.dataset.talk || '', text: tb.textContent, shown: !tb.hidden && tb.offsetParent !== null, enabled: !tb.disabled,
            note: tn && !tn.hidden ? tn.textContent : '', noteReason: (tn && tn.dataset.reason) || '', sent,
          };
        }
        return {
          state: el.dataset.state, reason: el.dataset.reason || '', ends: el.dataset.ends || '', text: el.textContent,
          rooms, signin: !!form && !form.hidden, scrollWidth: document.documentElement.scrollWidth,
          frames, first: Math.round(window.__first || 0), before: window.__before || 0,
          local: pair.local, remote: pair.remote, teacher, fleet, talk,
        };
      });
      s.loads = loads;
      const line = JSON.stringify(s);
      if (line !== last) {
        console.log(line);
        last = line;
      }
      await new Promise((r) => setTimeout(r, 40));
    }
  } finally {
    await browser.close();
    clearTimeout(deadline);
  }
})().catch((e) => { console.error(String(e)); process.exit(1); });
