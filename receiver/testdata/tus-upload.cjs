// Uploads a file to the receiver with tus-js-client (an independent tus
// implementation) over mutual TLS, and prints the upload URL.
// Usage: node tus-upload.cjs ENDPOINT FILE CA.pem CERT.pem KEY.pem
const tus = require('tus-js-client');
const fs = require('fs');

const [endpoint, file, ca, cert, key] = process.argv.slice(2);
const deadline = setTimeout(() => { console.error('tus-upload.cjs: timed out'); process.exit(2); }, 60000);
const data = fs.readFileSync(file);
const upload = new tus.Upload(data, {
  endpoint,
  uploadSize: data.length,
  chunkSize: 20000, // several PATCH requests
  retryDelays: [0, 200, 1000],
  metadata: { filename: 'segment.ubx' },
  httpStack: new tus.DefaultHttpStack({
    ca: fs.readFileSync(ca), cert: fs.readFileSync(cert), key: fs.readFileSync(key), minVersion: 'TLSv1.2',
  }),
  onError: (e) => { console.error(String(e)); process.exit(1); },
  onSuccess: () => { clearTimeout(deadline); console.log(upload.url); },
});
upload.start();
