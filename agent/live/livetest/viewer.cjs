// Opens the box's live-view page in Debian's Chromium through
// playwright-core and reports, as one JSON line per change, the page's
// status (#status data-state, data-reason, text) and the video frames the
// browser decoded (getStats inbound-rtp framesDecoded). It runs until its
// stdin closes. Usage: node viewer.cjs URL
const { chromium } = require('playwright-core');

const limit = Number(process.env.VIEWER_TIMEOUT_MS || 120000);
const deadline = setTimeout(() => { console.error('viewer.cjs: timed out'); process.exit(2); }, limit);

let quit = false;
process.stdin.on('data', () => {});
process.stdin.on('end', () => { quit = true; });

(async () => {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--autoplay-policy=no-user-gesture-required',
      // This machine has no sound card: a fake audio sink keeps Chromium from
      // stalling the page while it looks for one.
      '--disable-audio-output',
      '--disable-features=WebRtcHideLocalIpsWithMdns'],
  });
  try {
    const context = await browser.newContext({ ignoreHTTPSErrors: true });
    const page = await context.newPage();
    page.on('pageerror', (e) => console.error('page error: ' + e));
    await page.goto(process.argv[2]);
    let last = '';
    while (!quit) {
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
        if (window.__pc) {
          try {
            const stats = await window.__pc.getStats();
            stats.forEach((r) => {
              if (r.type === 'inbound-rtp' && r.kind === 'video') frames = r.framesDecoded || 0;
            });
          } catch (e) { /* a closed connection keeps its last count */ }
        }
        window.__frames = frames;
        return { state: el.dataset.state, reason: el.dataset.reason || '', text: el.textContent, frames, first: Math.round(window.__first || 0), before: window.__before || 0 };
      });
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
