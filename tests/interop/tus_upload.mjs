// Drive tus-js-client (Node) for tests/test_interop_node.py.
//
//   node tus_upload.mjs '<json options>'
//
// Options: endpoint, file, chunkSize, parallelUploads, metadata, uploadUrl (resume),
// abortAt (abort once this many bytes are acknowledged), terminate (URL to DELETE).
// Prints one JSON object per line on stdout: {"event": ...}; exits 1 on error.
import fs from "node:fs";
import * as tus from "tus-js-client";

const opts = JSON.parse(process.argv[2]);
const emit = (event) => process.stdout.write(JSON.stringify(event) + "\n");

function fail(error) {
  emit({ event: "error", message: String(error && error.message ? error.message : error) });
  process.exit(1);
}

async function terminate(url) {
  await tus.Upload.terminate(url, { retryDelays: [] });
  emit({ event: "terminated", url });
}

function upload() {
  return new Promise((resolve) => {
    const size = fs.statSync(opts.file).size;
    let firstProgress = null;
    let aborted = false;
    const upload = new tus.Upload(fs.createReadStream(opts.file), {
      endpoint: opts.endpoint,
      uploadUrl: opts.uploadUrl || null,
      uploadSize: opts.parallelUploads > 1 ? null : size,
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
