// The offer-engine console: reads the same APIs as every other caller, with
// the caller's key, and shows their figures as they come (no figure is
// recomputed here). Every figure element carries the API path it came from
// (data-src), where in that JSON it is (data-path) and the raw number
// (data-value), so a test can check the page against the API.
'use strict';

const KEY = 'offer-engine-console-key';
const app = document.getElementById('app');
const forget = document.getElementById('forget-key');

class NeedKey extends Error {}

// Replaces the page's content (arrays flattened, empty parts left out).
function show(...children) {
  app.replaceChildren(...children.flat(Infinity).filter((c) => c !== null && c !== undefined));
}

function storedKey() {
  return sessionStorage.getItem(KEY);
}

async function api(path, kind) {
  const headers = { Accept: kind === 'svg' ? 'image/svg+xml' : 'application/json' };
  const k = storedKey();
  if (k) headers.Authorization = 'Bearer ' + k;
  const r = await fetch(path, { headers });
  if (r.status === 401) {
    sessionStorage.removeItem(KEY);
    throw new NeedKey();
  }
  if (!r.ok) {
    let detail = r.status + ' ' + r.statusText;
    try {
      const p = await r.json();
      if (p.detail) detail = p.detail;
    } catch (_) { /* not problem+json */ }
    throw new Error(path + ': ' + detail);
  }
  return kind === 'svg' ? r.text() : r.json();
}

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') e.className = v;
    else e.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function get(obj, path) {
  return path.split('.').reduce((o, k) => (o == null ? undefined : o[k]), obj);
}

// A figure: shown formatted, carrying its source, path and raw value.
function fig(src, json, path, format, tag) {
  const v = get(json, path);
  const shown = v === null || v === undefined ? '–' : format(v);
  const attrs = { 'data-src': src, 'data-path': path, class: 'num' };
  if (typeof v === 'number') attrs['data-value'] = String(v);
  return el(tag || 'td', attrs, shown);
}

const int = (v) => Number(v).toLocaleString('en-GB');
const pct = (v) => (v * 100).toFixed(2) + '%';
const pval = (v) => (v < 0.0001 ? v.toExponential(1) : v.toFixed(4));
const num = (v) => Number(v).toFixed(2);

function table(head, rows) {
  return el('div', { class: 'table-wrap' },
    el('table', {},
      el('thead', {}, el('tr', {}, head.map((h) => el('th', { class: h.num ? 'num' : '' }, h.label || h)))),
      el('tbody', {}, rows)));
}

const SRM_THRESHOLD = 0.001;

function srmFailing(report) {
  return typeof report.srm_p_value === 'number' && report.srm_p_value < SRM_THRESHOLD;
}

function health(report) {
  if (srmFailing(report)) return ['failing', 'SRM failing'];
  const g = report.guardrails || [];
  if (g.some((x) => x.status === 'failing')) return ['failing', 'guardrail failing'];
  if (g.some((x) => x.status === 'warning')) return ['warning', 'guardrail warning'];
  return ['ok', 'healthy'];
}

function srmBanner(report) {
  return el('div', { class: 'banner srm', role: 'alert', 'data-srm-failing': true },
    'Sample-ratio mismatch: members per variant do not match the configured weights (SRM p = ',
    pval(report.srm_p_value),
    ' < 0.001). The split is broken; do not trust the other figures until it is explained.');
}

async function experimentsPage() {
  const src = '/v1/experiments';
  const list = await api(src);
  const reports = await Promise.all(list.experiments.map((e) =>
    api('/v1/experiments/' + encodeURIComponent(e.id) + '/report')));
  const rows = list.experiments.map((e, i) => {
    const rsrc = '/v1/experiments/' + encodeURIComponent(e.id) + '/report';
    const r = reports[i];
    const [cls, words] = health(r);
    const guard = (r.guardrails || []).map((g) => g.variant + ' ' + g.metric + ': ' + g.status).join('; ') || 'none set';
    return el('tr', { 'data-experiment': e.id },
      el('td', {}, el('a', { href: '#/experiment/' + encodeURIComponent(e.id) }, e.id)),
      el('td', { class: 'status-' + cls, 'data-status': cls }, 'running · ' + words),
      fig(src, list, 'experiments.' + i + '.traffic', pct),
      el('td', {}, e.variants.map((v) => v.name + ' ' + v.weight).join(' / ')),
      el('td', { class: 'num' }, r.variants.map((v, k) => [k ? ' / ' : '', fig(rsrc, r, 'variants.' + k + '.members', int, 'span')])),
      fig(rsrc, r, 'srm_p_value', pval),
      el('td', {}, guard));
  });
  const banners = reports.filter(srmFailing).map(srmBanner);
  show(
    el('h1', {}, 'Experiments'),
    banners,
    table(['Experiment', 'Status', { label: 'Traffic', num: true }, 'Variants (weights)',
      { label: 'Members per variant', num: true }, { label: 'SRM p-value', num: true }, 'Guardrails'], rows));
}

function liftKeys(row) {
  return Object.keys(row).filter((k) => k.endsWith('_lift') && row[k] && typeof row[k] === 'object');
}

const label = (k) => k.replace(/_lift$/, '').replace(/_/g, ' ');

async function plot(path, holder) {
  try {
    const svg = await api(path, 'svg');
    const doc = new DOMParser().parseFromString(svg, 'image/svg+xml');
    const node = doc.documentElement;
    if (node && node.nodeName === 'svg') holder.replaceChildren(document.importNode(node, true));
  } catch (e) {
    if (e instanceof NeedKey) throw e;
    holder.replaceChildren(el('div', { class: 'banner error' }, e.message));
  }
}

async function segmentTable(id, by, holder) {
  const src = '/v1/experiments/' + encodeURIComponent(id) + '/report?by=' + by;
  const s = await api(src);
  const rows = [];
  s.segments.forEach((seg, i) => {
    seg.variants.forEach((v, k) => {
      if (!v.conversion_lift) return;
      const p = 'segments.' + i + '.variants.' + k;
      rows.push(el('tr', {},
        el('td', {}, seg.segment), el('td', {}, v.variant),
        fig(src, s, p + '.members', int),
        fig(src, s, p + '.conversion_lift.relative', pct),
        fig(src, s, p + '.conversion_lift.p_value', pval),
        fig(src, s, p + '.conversion_lift.p_value_corrected', pval),
        el('td', {}, v.verdict || '')));
    });
  });
  holder.replaceChildren(
    el('p', {}, 'Split by ', by, ', p-values corrected across segments (', s.correction, '); segments under ', s.min_members, ' members per arm get no comparison.'),
    table(['Segment', 'Variant', { label: 'Members', num: true }, { label: 'Conversion lift', num: true },
      { label: 'p-value', num: true }, { label: 'Corrected p-value', num: true }, 'Verdict'], rows));
}

async function experimentPage(id) {
  const base = '/v1/experiments/' + encodeURIComponent(id);
  const src = base + '/report';
  const r = await api(src);
  const forest = el('div', { class: 'figure', id: 'forest' }, 'Loading…');
  const series = el('div', { class: 'figure', id: 'timeseries' }, 'Loading…');
  const segments = el('div', { id: 'segments' }, 'Loading…');
  const by = el('select', { id: 'segment-by', 'aria-label': 'segment by' },
    ['tier', 'value_segment', 'traveller', 'home_airport', 'channel'].map((b) => el('option', { value: b }, b)));
  const liftRows = [];
  r.variants.forEach((v, k) => {
    for (const key of liftKeys(v)) {
      const p = 'variants.' + k + '.' + key;
      liftRows.push(el('tr', { 'data-variant': v.variant, 'data-lift': key },
        el('td', {}, v.variant), el('td', {}, label(key)),
        fig(src, r, p + '.absolute', num),
        fig(src, r, p + '.relative', pct),
        fig(src, r, p + '.relative_ci_low', pct),
        fig(src, r, p + '.relative_ci_high', pct),
        fig(src, r, p + '.p_value', pval)));
    }
  });
  const variantRows = r.variants.map((v, k) => el('tr', {},
    el('td', {}, v.variant + (v.variant === r.control ? ' (control)' : '')),
    fig(src, r, 'variants.' + k + '.members', int),
    fig(src, r, 'variants.' + k + '.conversions', int),
    fig(src, r, 'variants.' + k + '.conversion_rate', pct),
    fig(src, r, 'variants.' + k + '.revenue_per_member.mean', num),
    fig(src, r, 'variants.' + k + '.chance_to_beat_control', pct),
    fig(src, r, 'variants.' + k + '.sequential_p_value', pval),
    fig(src, r, 'variants.' + k + '.sample_size_needed', int)));
  const guardRows = (r.guardrails || []).map((g, k) => el('tr', {},
    el('td', {}, g.variant), el('td', {}, g.metric),
    fig(src, r, 'guardrails.' + k + '.margin', num),
    fig(src, r, 'guardrails.' + k + '.harm', num),
    el('td', { class: 'status-' + g.status }, g.status)));
  show(
    el('h1', {}, 'Experiment ', id),
    srmFailing(r) ? srmBanner(r) : null,
    el('p', {}, 'Control: ', r.control, ' · SRM p-value ', fig(src, r, 'srm_p_value', pval, 'span')),
    el('h2', {}, 'Verdict'),
    el('ul', { class: 'verdicts' }, r.variants.filter((v) => v.verdict).map((v) =>
      el('li', { 'data-verdict': v.variant }, el('strong', {}, v.variant + ': '), v.verdict))),
    el('h2', {}, 'Variants'),
    table(['Variant', { label: 'Members', num: true }, { label: 'Conversions', num: true },
      { label: 'Conversion rate', num: true }, { label: 'Revenue per member', num: true },
      { label: 'Chance to beat control', num: true }, { label: 'Always-valid p', num: true },
      { label: 'Members still needed', num: true }], variantRows),
    el('h2', {}, 'Lifts against the control'),
    forest,
    table(['Variant', 'Metric', { label: 'Absolute', num: true }, { label: 'Relative', num: true },
      { label: '95% low', num: true }, { label: '95% high', num: true }, { label: 'p-value', num: true }], liftRows),
    el('h2', {}, 'Results over time'),
    series,
    el('h2', {}, 'Segments ', by),
    segments,
    el('h2', {}, 'Guardrails'),
    guardRows.length ? table(['Variant', 'Metric', { label: 'Margin', num: true }, { label: 'Harm', num: true }, 'Status'], guardRows)
      : el('p', {}, 'No guardrails set.'));
  by.addEventListener('change', () => run(() => segmentTable(id, by.value, segments)));
  await Promise.all([
    plot(base + '/plots/forest.svg', forest),
    plot(base + '/plots/timeseries.svg', series),
    segmentTable(id, 'tier', segments),
  ]);
}

async function offersPage() {
  const src = '/v1/offers/stats';
  const s = await api(src);
  const rows = s.channels.map((c, i) => {
    const p = 'channels.' + i;
    return el('tr', { 'data-offer': c.offer_id, 'data-channel': c.channel },
      el('td', {}, c.offer_id), el('td', {}, c.channel),
      fig(src, s, p + '.shown', int),
      fig(src, s, p + '.accepts', int),
      fig(src, s, p + '.accept_rate', pct),
      fig(src, s, p + '.value_per_shown', num),
      fig(src, s, p + '.declines', int),
      fig(src, s, p + '.suppressions', int),
      fig(src, s, p + '.refunds', int),
      fig(src, s, p + '.explored_share', pct));
  });
  const offerRows = s.offers.map((o, i) => {
    const p = 'offers.' + i;
    return el('tr', { 'data-offer': o.offer_id },
      el('td', {}, o.offer_id),
      fig(src, s, p + '.inventory_used_today', int),
      fig(src, s, p + '.inventory_cap', int),
      fig(src, s, p + '.model_examples', int),
      fig(src, s, p + '.model_accepts', int));
  });
  const figure = el('div', { class: 'figure', id: 'offers-plot' }, 'Loading…');
  show(
    el('h1', {}, 'Offers'),
    el('p', {}, 'Per offer and channel, from the records applied. Value in CNY; accept rate and value per offer shown; explored: share of shows in a slot the exploration policy filled with a probability below 1.'),
    rows.length ? table(['Offer', 'Channel', { label: 'Shown', num: true }, { label: 'Accepts', num: true },
      { label: 'Accept rate', num: true }, { label: 'Value / shown (CNY)', num: true },
      { label: 'Declines', num: true }, { label: 'Suppressed', num: true },
      { label: 'Refunds', num: true }, { label: 'Explored', num: true }], rows)
      : el('p', {}, 'No offer shown yet.'),
    figure,
    el('h2', {}, 'Inventory today and model evidence'),
    el('p', {}, 'Capped units taken by accepts on the log day ', s.log_day || '–',
      ' against the cap of the flight or airport-day; the adaptive model\u2019s examples and accepts folded in (– : no cap used today, or no adaptive model).'),
    offerRows.length ? table(['Offer', { label: 'Units used today', num: true }, { label: 'Cap', num: true },
      { label: 'Model examples', num: true }, { label: 'Model accepts', num: true }], offerRows) : null);
  await plot('/v1/offers/plots/offers.svg', figure);
}

const duration = (v) => (v < 1000 ? v + ' ms' : (v / 1000).toFixed(1) + ' s');

async function campaignsPage() {
  const src = '/v1/campaigns/runs';
  const s = await api(src);
  const rows = s.runs.map((r, i) => {
    const p = 'runs.' + i;
    return el('tr', { 'data-campaign': r.campaign_id },
      el('td', {}, r.campaign_id), el('td', {}, r.channel),
      el('td', {}, r.segment === '{}' ? 'every member with consent' : el('code', {}, r.segment)),
      el('td', {}, r.started_at),
      fig(src, s, p + '.members_scored', int),
      fig(src, s, p + '.members_written', int),
      fig(src, s, p + '.held_out', int),
      fig(src, s, p + '.duration_ms', duration),
      fig(src, s, p + '.accepts', int));
  });
  show(
    el('h1', {}, 'Campaigns'),
    el('p', {}, 'Runs so far, newest first. Scored: members in the segment with consent for the channel; accepts: of the decisions issued under the campaign id.'),
    rows.length ? table(['Campaign', 'Channel', 'Segment', 'Started (UTC)', { label: 'Scored', num: true },
      { label: 'Written', num: true }, { label: 'Held out', num: true }, { label: 'Duration', num: true },
      { label: 'Accepts', num: true }], rows) : el('p', {}, 'No campaign run yet.'));
}

function keyForm() {
  const input = el('input', { type: 'password', id: 'api-key', name: 'key', autocomplete: 'off', required: true });
  const form = el('form', { class: 'key', id: 'key-form', 'data-needs-key': true },
    el('h1', {}, 'API key needed'),
    el('p', {}, 'This server protects its data. Enter a key with the experiments:read scope; it is kept for this browser session only and sent as a header, never in a URL.'),
    el('label', { for: 'api-key' }, 'API key'), input,
    el('button', { type: 'submit' }, 'Open the console'));
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(KEY, input.value.trim());
    route();
  });
  show(form);
}

async function run(page) {
  try {
    await page();
  } catch (e) {
    if (e instanceof NeedKey) keyForm();
    else app.prepend(el('div', { class: 'banner error', 'data-error': true }, e.message));
  }
  forget.hidden = !storedKey();
  document.body.setAttribute('data-ready', '');
}

function route() {
  document.body.removeAttribute('data-ready');
  const h = location.hash.replace(/^#\/?/, '');
  const [page, arg] = h.split('/');
  if (page === 'experiment' && arg) return run(() => experimentPage(decodeURIComponent(arg)));
  if (page === 'offers') return run(offersPage);
  if (page === 'campaigns') return run(campaignsPage);
  return run(experimentsPage);
}

forget.addEventListener('click', () => {
  sessionStorage.removeItem(KEY);
  route();
});
window.addEventListener('hashchange', route);
route();
