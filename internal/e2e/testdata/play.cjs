// Plays the page's <video> in Debian's Chromium through playwright-core and
// prints what the browser decoded as JSON. Usage: node play.cjs URL
const { chromium } = require('playwright-core');

const deadline = setTimeout(() => { console.error('play.cjs: timed out'); process.exit(2); }, 60000);

(async () => {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--autoplay-policy=no-user-gesture-required'],
  });
  try {
    const page = await browser.newPage();
    await page.goto(process.argv[2]);
    const result = await page.evaluate(async () => {
      const v = document.querySelector('video');
      await new Promise((resolve, reject) => {
        const fail = () => reject(new Error('media error ' + (v.error ? v.error.code + ': ' + v.error.message : '')));
        if (v.error) fail();
        v.addEventListener('error', fail);
        if (v.readyState >= 1) resolve(); else v.addEventListener('loadedmetadata', resolve);
      });
      await v.play();
      await new Promise((resolve) => {
        const t = setInterval(() => { if (v.currentTime >= 2) { clearInterval(t); resolve(); } }, 50);
      });
      const q = v.getVideoPlaybackQuality();
      return {
        duration: v.duration, width: v.videoWidth, height: v.videoHeight, currentTime: v.currentTime,
        framesDecoded: q.totalVideoFrames, audioBytes: v.webkitAudioDecodedByteCount,
        videoBytes: v.webkitVideoDecodedByteCount,
      };
    });
    console.log(JSON.stringify(result));
  } finally {
    await browser.close();
    clearTimeout(deadline);
  }
})().catch((e) => { console.error(String(e)); process.exit(1); });
