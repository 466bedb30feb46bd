// One run of tus-js-client (Node) against hmac-file-server, driven by
// test_tus_clients.py. Usage: node tus_js_upload.mjs '<json options>'
//
// Options (JSON):
//   file              path of the file to upload
//   source            "path": fs.createReadStream(file) (tus-js-client reads it as a file,
//                     seeking on resume); "buffer": the whole file as a Buffer
//   endpoint          creation URL (the slot URL with its ?v= query), or omitted
//   uploadUrl         tus upload URL to resume (tus-js-client's `uploadUrl` option)
//   urlStorage        path of a tus.FileUrlStorage file; with resumePrevious, the upload is
//                     resumed through findPreviousUploads() + resumeFromPreviousUpload()
//   resumePrevious    true: exactly one previous upload must be found and resumed
//   chunkSize, uploadSize, metadata, retryDelays, uploadDataDuringCreation, parallelUploads:
//                     as in tus-js-client
//   abortAfterChunks  N: call upload.abort() from onChunkComplete once N chunks went through
//   cutAfterChunks    N, with cutBytes B: the PATCH after the N-th chunk sends its headers
//                     (Content-Length: the whole chunk) and only the first B bytes of its body
//                     (B = the chunk size: all of it); once those are in the kernel's socket
//                     buffer, this process SIGKILLs itself, so the server sees the connection end
//                     in the middle of the body, or right after it, before its response (a client
//                     killed, or a network cut). Done by a thin httpStack wrapper around
//                     tus-js-client's own NodeHttpStack: everything else (URLs, headers, offsets,
//                     retries) is tus-js-client's.
//   maxRetries        retries allowed in all (default 2), so a stuck upload fails fast
//   protocol          tus-js-client's protocol option: "tus-v1" (default), or its IETF
//                     resumable-upload draft modes "ietf-draft-03" / "ietf-draft-05"
//
// Prints one JSON object per line on stdout: every request (method, URL, tus headers) and
// response (status, tus headers), chunk completions, retries, and how the run ended:
// {"event":"aborted"|"success"|"error"|"killing", ...}. Exit 0 after success or abort, 1 on error.

import fs from 'node:fs';
import http from 'node:http';
import * as tus from 'tus-js-client';

const opts = JSON.parse(process.argv[2]);

function emit(obj) {
  // Synchronous, so nothing is lost when the process is killed right after.
  fs.writeSync(1, JSON.stringify(obj) + '\n');
}

const REQUEST_HEADERS = ['Tus-Resumable', 'Upload-Length', 'Upload-Offset', 'Upload-Metadata',
  'Upload-Defer-Length', 'Upload-Concat', 'Content-Type', 'Upload-Draft-Interop-Version',
  'Upload-Complete'];
const RESPONSE_HEADERS = ['Tus-Resumable', 'Location', 'Upload-Offset', 'Upload-Length',
  'Upload-Metadata', 'Upload-Concat', 'Upload-Expires', 'Upload-Complete', 'Upload-Limit'];

function pick(getter, names) {
  const out = {};
  for (const name of names) {
    const value = getter(name);
    if (value !== undefined && value !== null) out[name] = String(value);
  }
  return out;
}

const input = opts.source === 'buffer' ? fs.readFileSync(opts.file) : fs.createReadStream(opts.file);
const chunkSize = opts.chunkSize;
let chunks = 0;
let retries = 0;
let finished = false;

function finish(code, obj) {
  if (finished) return;
  finished = true;
  emit(obj);
  process.exitCode = code;
}

// tus-js-client's NodeHttpStack, except for the one PATCH that cutAfterChunks picks.
class CuttingHttpStack {
  constructor(inner, cutAfterChunks, cutBytes) {
    this.inner = inner;
    this.patches = 0;
    this.cutAt = cutAfterChunks;
    this.cutBytes = cutBytes;
  }

  createRequest(method, url) {
    const req = this.inner.createRequest(method, url);
    if (method === 'PATCH' && this.patches++ === this.cutAt) {
      req.send = (body) => sendCut(req, body, this.cutBytes);
    }
    return req;
  }

  getName() {
    return `CuttingHttpStack(${this.inner.getName()})`;
  }
}

function sendCut(req, body, cutBytes) {
  const headers = {};
  for (const name of REQUEST_HEADERS) {
    const value = req.getHeader(name);
    if (value !== undefined) headers[name] = value;
  }
  headers['Content-Length'] = body.length;
  const creq = http.request(req.getURL(), { method: req.getMethod(), headers, agent: false });
  creq.on('error', (err) => {
    emit({ event: 'error', message: `cut PATCH failed: ${err}` });
    process.exit(1);
  });
  // The write callback runs once headers and bytes are handed to the kernel; what the kernel
  // holds is still delivered after the process dies, then the connection is closed.
  creq.write(body.subarray(0, cutBytes), () => {
    const how = cutBytes >= body.length ? 'after-body' : 'mid-body';
    emit({ event: 'killing', how, offset: Number(req.getHeader('Upload-Offset')),
      sent: cutBytes, length: body.length, url: upload.url });
    process.kill(process.pid, 'SIGKILL');
  });
  return new Promise(() => {});
}

const options = {
  chunkSize,
  uploadSize: opts.uploadSize,
  metadata: opts.metadata || {},
  retryDelays: opts.retryDelays ?? [0, 250, 1000],
  onBeforeRequest(req) {
    emit({
      event: 'request',
      method: req.getMethod(),
      url: req.getURL(),
      headers: pick((h) => req.getHeader(h), REQUEST_HEADERS),
    });
  },
  onAfterResponse(req, res) {
    emit({
      event: 'response',
      method: req.getMethod(),
      url: req.getURL(),
      status: res.getStatus(),
      headers: pick((h) => res.getHeader(h), RESPONSE_HEADERS),
      body: res.getStatus() >= 400 ? String(res.getBody()).slice(0, 300) : undefined,
    });
  },
  onShouldRetry(err, attempt) {
    // tus-js-client's default rule (not a 4xx, except 409 and 423), with a cap on the total.
    const status = err.originalResponse ? err.originalResponse.getStatus() : 0;
    retries += 1;
    const retry = (status < 400 || status >= 500 || status === 409 || status === 423)
      && retries <= (opts.maxRetries ?? 2);
    emit({ event: 'retry', attempt, status, retry, error: String(err.message || err) });
    return retry;
  },
  onChunkComplete(size, accepted, total) {
    chunks += 1;
    emit({ event: 'chunk', n: chunks, size, accepted, total });
    if (opts.abortAfterChunks && chunks >= opts.abortAfterChunks) {
      upload.abort().then(
        () => finish(0, { event: 'aborted', url: upload.url, accepted }),
        (err) => finish(1, { event: 'error', message: `abort failed: ${err}` }),
      );
    }
  },
  onSuccess() {
    finish(0, { event: 'success', url: upload.url, chunks });
  },
  onError(err) {
    finish(1, { event: 'error', message: String(err.message || err) });
  },
};
if (opts.endpoint) options.endpoint = opts.endpoint;
if (opts.protocol) options.protocol = opts.protocol;
if (opts.uploadDataDuringCreation) options.uploadDataDuringCreation = true;
if (opts.parallelUploads) options.parallelUploads = opts.parallelUploads;
if (opts.uploadUrl) options.uploadUrl = opts.uploadUrl;
if (opts.urlStorage) options.urlStorage = new tus.FileUrlStorage(opts.urlStorage);
if (opts.cutAfterChunks) {
  options.httpStack = new CuttingHttpStack(new tus.DefaultHttpStack(), opts.cutAfterChunks, opts.cutBytes);
}

const upload = new tus.Upload(input, options);

if (opts.resumePrevious) {
  const previous = await upload.findPreviousUploads();
  emit({
    event: 'previous',
    uploads: previous.map((p) => ({ uploadUrl: p.uploadUrl, parallelUploadUrls: p.parallelUploadUrls, size: p.size })),
  });
  if (previous.length !== 1) {
    finish(1, { event: 'error', message: `expected exactly one previous upload, found ${previous.length}` });
  } else {
    upload.resumeFromPreviousUpload(previous[0]);
    upload.start();
  }
} else {
  upload.start();
}
