// Drive tus-js-client (Node) for tests/test_interop_node.py and tests/test_interop_node_ietf.py.
//
//   node tus_upload.mjs '<json options>'
//
// Options: endpoint, file, chunkSize, parallelUploads, metadata, uploadUrl (resume),
// abortAt (abort once this many bytes are acknowledged), terminate (URL to DELETE),
// protocol ('tus-v1' (default), 'ietf-draft-03', 'ietf-draft-05'), uploadDataDuringCreation,
// overridePatchMethod, stream (read the file through a plain Readable, not an fs.ReadStream, so
// tus-js-client uses its StreamSource: no size known, chunkSize required), uploadLengthDeferred
// (Upload-Defer-Length: 1; the length is sent with the last PATCH), trace (emit an "exchange"
// event per answered request: method, URL, the protocol fields sent and received, status).
// Prints one JSON object per line on stdout: {"event": ...}; exits 1 on error.
import fs from "node:fs";
import { PassThrough } from "node:stream";
import * as tus from "tus-js-client";

const opts = JSON.parse(process.argv[2]);
const emit = (event) => process.stdout.write(JSON.stringify(event) + "\n");
// Only set what was asked for, so tus-js-client's own defaults apply otherwise.
const protocol = opts.protocol ? { protocol: opts.protocol } : {};

// The fields a trace records, in requests and in responses (absent ones are left out).
const TRACED = [
  "Tus-Resumable",
  "Upload-Draft-Interop-Version",
  "Upload-Complete",
  "Upload-Offset",
  "Upload-Length",
  "Upload-Defer-Length",
  "Upload-Metadata",
  "Content-Type",
  "X-HTTP-Method-Override",
  "Location",
];

function fields(message) {
  const found = {};
  for (const name of TRACED) {
    const value = message.getHeader(name);
    if (value !== undefined && value !== null) found[name] = String(value);
  }
  return found;
}

const trace = opts.trace
  ? {
      onAfterResponse(req, res) {
        emit({
          event: "exchange",
          method: req.getMethod(),
          url: req.getURL(),
          request: fields(req),
          status: res.getStatus(),
          response: fields(res),
        });
      },
    }
  : {};

function fail(error) {
  const response = error && error.originalResponse;
  emit({
    event: "error",
    message: String(error && error.message ? error.message : error),
    status: response ? response.getStatus() : null,
  });
  process.exit(1);
}

async function terminate(url) {
  await tus.Upload.terminate(url, { retryDelays: [], ...protocol, ...trace });
  emit({ event: "terminated", url });
}

function source() {
  if (!opts.stream) return fs.createReadStream(opts.file);
  // A Readable without a `path`: tus-js-client cannot stat it and treats it as a stream.
  return fs.createReadStream(opts.file).pipe(new PassThrough());
}

function uploadSize(size) {
  if (opts.parallelUploads > 1 || opts.uploadLengthDeferred) return null;
  return size;
}

function upload() {
  return new Promise((resolve) => {
    const size = fs.statSync(opts.file).size;
    let firstProgress = null;
    let aborted = false;
    const upload = new tus.Upload(source(), {
      ...protocol,
      ...trace,
      endpoint: opts.endpoint,
      uploadUrl: opts.uploadUrl || null,
      uploadSize: uploadSize(size),
      uploadLengthDeferred: Boolean(opts.uploadLengthDeferred),
      uploadDataDuringCreation: Boolean(opts.uploadDataDuringCreation),
      overridePatchMethod: Boolean(opts.overridePatchMethod),
      chunkSize: opts.chunkSize || Infinity,
      parallelUploads: opts.parallelUploads || 1,
      metadata: opts.metadata || {},
      retryDelays: [],
      removeFingerprintOnSuccess: true,
      storeFingerprintForResuming: false,
      onUploadUrlAvailable() {
        emit({ event: "url", url: upload.url });
      },
      onProgress(bytesSent, bytesTotal) {
        if (firstProgress === null) firstProgress = bytesSent;
        if (opts.abortAt && !aborted && bytesSent >= opts.abortAt) {
          aborted = true;
          upload.abort(false).then(() => {
            emit({ event: "aborted", url: upload.url, bytesSent, bytesTotal });
            resolve();
          }, fail);
        }
      },
      onChunkComplete(chunkSize, bytesAccepted) {
        emit({ event: "chunk", bytesAccepted });
      },
      onSuccess() {
        emit({ event: "success", url: upload.url, size, firstProgress });
        resolve();
      },
      onError: fail,
    });
    upload.start();
  });
}

(opts.terminate ? terminate(opts.terminate) : upload()).catch(fail);
