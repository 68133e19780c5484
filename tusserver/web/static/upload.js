// The upload page: Uppy's Dashboard with its Tus plugin, then each finished upload's processing
// status, live from the server's /events stream (Server-Sent Events).
//
// The server's settings come from data-* attributes of #uploader, since the page's
// Content-Security-Policy allows no inline script. Everything the server sends back (file
// names, CSV headers, row excerpts) is put on the page with textContent, never as HTML.
import { Dashboard, Tus, Uppy } from './vendor/uppy.min.mjs'

const ERRORS_SHOWN = 10 // malformed rows listed on the page; the full report is a link
const RETRY_DELAYS = [0, 1000, 3000, 5000, 10000] // ms: network errors, 5xx, 409, 423
const STATES = {
  uploading: 'Finishing the upload',
  queued: 'Waiting for processing',
  processing: 'Processing…',
  completed: 'Processed',
  failed: 'Processing failed',
  terminated: 'Removed from the server',
  expired: 'Expired on the server'
}
const number = new Intl.NumberFormat('en')
const uploader = document.getElementById('uploader')
const pageConfig = readConfig(uploader)

function readConfig (element) {
  const data = element.dataset
  const list = (text) => (text ? text.split(',') : [])
  return {
    // absolute: tus-js-client resolves the Location header against it
    endpoint: new URL(data.endpoint, document.baseURI).href,
    events: data.events,
    report: data.report,
    maxSize: Number(data.maxSize) || null,
    allowedTypes: list(data.allowedTypes),
    plugins: list(data.plugins)
  }
}

function dropNote () {
  // checked by the server from the bytes (validate plugin), so only said here, not enforced
  const types = pageConfig.allowedTypes
  return types.length ? `Accepted: ${types.join(', ')} (checked on the server)` : null
}

function el (tag, attributes = {}, ...children) {
  const node = document.createElement(tag)
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value)
  node.append(...children)
  return node
}

function duration (seconds) {
  if (seconds == null) return 'unknown'
  if (seconds < 60) return `${Math.ceil(seconds)} s`
  const minutes = Math.floor(seconds / 60)
  if (minutes < 60) return `${minutes} min ${Math.round(seconds % 60)} s`
  return `${Math.floor(minutes / 60)} h ${minutes % 60} min`
}

function uploadId (uploadURL) {
  return new URL(uploadURL).pathname.split('/').filter(Boolean).pop()
}

// One finished upload in the "After upload" list, updated from its status documents.
class Result {
  constructor (list, file, id) {
    this.id = id
    this.state = el('p', { class: 'state', role: 'status' })
    this.progress = el('progress', { max: '100', value: '0', 'aria-label': `Processing ${file.name}` })
    this.facts = el('dl', { class: 'facts' })
    this.details = el('div', { class: 'details' })
    this.spoken = ''
    list.append(el('li', { class: 'result', 'data-upload-id': id },
      el('h3', {}, file.name), this.state, this.progress, this.facts, this.details))
  }

  say (text) {
    // a live region: rewriting the same text would be read out again
    if (text !== this.spoken) this.state.textContent = this.spoken = text
  }

  stored () {
    this.progress.remove()
    this.say('Stored on the server. Processing is off on this server: nothing is checked.')
  }

  show (doc) {
    const job = doc.processing
    this.say(headline(doc))
    if (job) {
      this.progress.value = job.percent ?? 0
      this.showFacts(doc, job)
    }
    if (job && job.results) this.showResults(job)
  }

  showFacts (doc, job) {
    const facts = []
    if (job.plugins.includes('csv')) {
      facts.push(['Records', number.format(job.records ?? 0)],
        ['Malformed rows', number.format(job.error_count ?? 0)])
    }
    if (doc.status === 'processing') {
      facts.push(['Progress', `${(job.percent ?? 0).toFixed(1)} %`],
        ['Time left', duration(job.eta_seconds)])
    }
    this.facts.replaceChildren(...facts.map(([name, value]) =>
      el('div', {}, el('dt', {}, name), el('dd', {}, value))))
  }

  showResults (job) {
    this.progress.remove()
    const parts = []
    const validate = job.results.validate
    if (validate && validate.content_type) parts.push(typeNote(validate))
    const csv = job.results.csv
    if (csv && csv.headers) parts.push(columnsTable(csv))
    if (csv && csv.errors && csv.errors.length) parts.push(errorsTable(csv.errors, job.error_count))
    if (job.error_count) parts.push(reportLink(this.id, job.error_count))
    this.details.replaceChildren(...parts)
  }
}

// The status line changes with the state only: it is read out (a live region), the progress
// bar and the facts below it follow every event.
function headline (doc) {
  const job = doc.processing
  const label = STATES[doc.status] || doc.status
  if (doc.status === 'failed') return `${label}: ${(job && job.error) || 'see the server log'}`
  if (doc.status !== 'completed' || !job) return label
  const records = job.plugins.includes('csv') ? `${number.format(job.records)} records, ` : ''
  const rows = job.error_count
  const found = rows ? `${number.format(rows)} malformed ${rows === 1 ? 'row' : 'rows'}` : 'no problems found'
  return `${label}: ${records}${found}`
}

function typeNote (validate) {
  const encoding = validate.encoding ? `, ${validate.encoding}` : ''
  return el('p', { class: 'muted' }, `Content: ${validate.content_type}${encoding}, SHA-256 `,
    el('code', { class: 'digest' }, validate.digests.sha256))
}

function table (caption, headings, rows) {
  const head = el('tr', {}, ...headings.map((text) => el('th', { scope: 'col' }, text)))
  const body = rows.map((cells) => el('tr', {}, ...cells.map((text) => el('td', {}, String(text)))))
  // a region that scrolls sideways on narrow screens, reachable with the keyboard
  return el('div', { class: 'table-scroll', role: 'region', tabindex: '0', 'aria-label': caption },
    el('table', {}, el('caption', {}, caption), el('thead', {}, head), el('tbody', {}, ...body)))
}

function columnsTable (csv) {
  const summary = csv.column_summary || csv.headers.map((name) => ({ name, type: 'not inferred' }))
  const rows = summary.map((c) => [c.name, c.type,
    c.empty_share == null ? '' : `${Math.round(c.empty_share * 100)} %`])
  return table(`Columns (${csv.columns}, delimiter “${csv.delimiter}”)`,
    ['Header', 'Type', 'Empty'], rows)
}

function errorsTable (errors, total) {
  const shown = errors.slice(0, ERRORS_SHOWN)
  const caption = total > shown.length
    ? `Malformed rows: the first ${shown.length} of ${number.format(total)}`
    : 'Malformed rows'
  return table(caption, ['Line', 'Problem', 'Details'],
    shown.map((e) => [e.line ?? '', e.kind, e.message]))
}

function reportLink (id, count) {
  const href = pageConfig.report.replace('{id}', encodeURIComponent(id))
  return el('p', {}, el('a', { href, download: `${id}-errors.csv` },
    `Download the full error report (${number.format(count)} ${count === 1 ? 'row' : 'rows'}, CSV)`))
}

function follow (result) {
  const source = new EventSource(pageConfig.events.replace('{id}', encodeURIComponent(result.id)))
  source.addEventListener('status', (event) => result.show(JSON.parse(event.data)))
  // the stream ends once the job has; without close() EventSource would reconnect
  source.addEventListener('end', () => source.close())
  source.addEventListener('error', () => {
    if (source.readyState === EventSource.CLOSED) result.say('Lost the status stream: reload to check.')
  })
}

function start (element) {
  const results = document.getElementById('results')
  const uppy = new Uppy({ id: 'tusserver', restrictions: { maxFileSize: pageConfig.maxSize } })
    .use(Dashboard, {
      inline: true,
      target: element,
      width: '100%',
      height: 380,
      theme: 'auto',
      showProgressDetails: true,
      proudlyDisplayPoweredByUppy: false,
      note: dropNote()
    })
    .use(Tus, {
      endpoint: pageConfig.endpoint,
      retryDelays: RETRY_DELAYS,
      removeFingerprintOnSuccess: true, // the same file chosen again later is a new upload
      limit: 4
    })
  uppy.on('upload-success', (file, response) => {
    document.getElementById('results-empty').hidden = true
    const result = new Result(results, file, uploadId(response.uploadURL))
    if (pageConfig.plugins.length) follow(result)
    else result.stored()
  })
  return uppy
}

start(uploader)
