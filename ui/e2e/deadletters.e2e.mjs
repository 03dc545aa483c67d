// Browser end-to-end test of the Dead letters screen against a real `driftless serve --demo`
// whose ledger was first seeded with 100,000 dead letters (`driftless dev seed-dead-letters`),
// plus real ones the demo makes when the billing simulator fails writes. Measures the table
// at 100k rows (time to first rows, rows in the page, frame times while scrolling, jumps deep
// into the set) and clicks through filter → URL, the drawer, retry one, bulk discard after the
// blast radius, and CSV export — checking the ledger (API) and the simulators after each.
//
// Env: see harness.mjs; DL_SEED (default 100000); screenshot: dead-letters.png in the screenshots folder.

import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';

import { api, BIN, closeAll, get, log, openConsole, run, S, screenshotPath, simRequests, sleep, UI_DIR, waitFor } from './harness.mjs';

const SEED = Number(process.env.DL_SEED ?? 100_000);

const tmp = mkdtempSync(path.join(os.tmpdir(), 'driftless-dl-e2e-'));
const LEDGER = path.join(tmp, 'ledger.db');
const CONTRACT = path.join(tmp, 'contract.toml');

/** Open dead letters for a filter, as the engine counts them. */
async function apiTotal(f = {}) {
  return (await api('/api/list_dead_letters', { method: 'POST', body: { ...f, limit: 1 } })).total;
}

/** The real (demo-made) dead letter test f retries; g shows it in the drawer. */
let realDl = null;

const stats = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const q = (p) => s[Math.min(s.length - 1, Math.floor(p * s.length))];
  return { n: s.length, p50: q(0.5), p95: q(0.95), max: s[s.length - 1] };
};
const r1 = (x) => Math.round(x * 10) / 10;

/** Total shown by the page (its data attribute), or null while loading. */
async function pageTotal() {
  const v = await S.page.getByTestId('dl-total').getAttribute('data-total');
  return v === '' || v === null ? null : Number(v);
}

/** Clear the filters (the button shows only while some are set). */
async function clearFilters() {
  if ((await S.page.getByTestId('dl-clear').count()) > 0) await S.page.getByTestId('dl-clear').click();
  await waitFor('no filters in the address', async () => [...hashParams().params.keys()].every((k) => k === 'dl'));
}

function hashParams() {
  const h = new URL(S.page.url()).hash;
  const q = h.indexOf('?');
  return { screen: h.slice(2, q < 0 ? undefined : q), params: new URLSearchParams(q < 0 ? '' : h.slice(q + 1)) };
}

async function billingSim() {
  const o = await api('/api/overview');
  return o.systems.billing.base_url.replace(/\/+$/, '');
}

async function setBillingFaults(profile) {
  const res = await get(`${await billingSim()}/_sim/faults`, { method: 'POST', body: profile });
  assert.equal(res.status, 200, `POST /_sim/faults ${profile}`);
}

/** Parse CSV text (RFC 4180: quoted cells, doubled quotes, line breaks inside quotes). */
function parseCsv(text) {
  const rows = [];
  let row = [];
  let cell = '';
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') {
        cell += '"';
        i++;
      } else if (c === '"') quoted = false;
      else cell += c;
    } else if (c === '"') quoted = true;
    else if (c === ',') {
      row.push(cell);
      cell = '';
    } else if (c === '\n') {
      row.push(cell);
      rows.push(row);
      row = [];
      cell = '';
    } else cell += c;
  }
  if (cell !== '' || row.length) {
    row.push(cell);
    rows.push(row);
  }
  return rows;
}

describe('Dead letters screen in Chromium', { concurrency: 1 }, () => {
  before(async () => {
    const t0 = Date.now();
    const out = await run(BIN, ['dev', 'seed-dead-letters', String(SEED), '--ledger', LEDGER], 120_000);
    log(`seeded: ${out.trim()} (${Date.now() - t0} ms with process start)`);
    // The demo's contract with two attempts per write and short backoffs, so failed billing
    // writes become (real) dead letters within seconds.
    const contract = readFileSync(path.resolve(UI_DIR, '../contracts/default.toml'), 'utf8')
      .replace(/^max_attempts = \d+/m, 'max_attempts = 2')
      .replace(/^base_backoff_ms = \d+/m, 'base_backoff_ms = 20')
      .replace(/^max_backoff_ms = \d+/m, 'max_backoff_ms = 50');
    assert.match(contract, /^max_attempts = 2/m);
    writeFileSync(CONTRACT, contract);
    await openConsole(['--ledger', LEDGER, '--contract', CONTRACT]);
  });

  after(async () => {
    await closeAll();
    rmSync(tmp, { recursive: true, force: true });
  });

  it('a. at 100,000 rows: first rows fast, few rows in the page, smooth scrolling, deep jumps', async () => {
    const page = S.page;
    const total = await apiTotal();
    assert.ok(total >= SEED, `the ledger holds ${total} open dead letters`);
    const t0 = Date.now();
    await page.getByTestId('nav-dead-letters').click();
    await page.locator('[data-testid=dl-row]').first().waitFor({ state: 'visible' });
    const firstRowsMs = Date.now() - t0;
    await waitFor('the total', async () => (await pageTotal()) !== null);
    const shown = await pageTotal();
    assert.ok(Math.abs(shown - total) < 200, `page says ${shown}, engine ${total} (the demo adds a few)`);
    const firstId = Number(await page.locator('[data-testid=dl-row]').first().getAttribute('data-id'));
    const newest = (await api('/api/list_dead_letters', { method: 'POST', body: { limit: 1 } })).items[0].id;
    assert.ok(firstId <= newest && firstId > newest - 200, `first row ${firstId}, newest ${newest}`);

    // Continuous scrolling, 150 frames each: a brisk wheel (100 px ≈ 3 rows a frame) then a
    // fling (600 px ≈ 18 rows a frame, faster than pages arrive); frame times from rAF.
    const scroll = (px) =>
      page.evaluate(async (px) => {
        const sc = document.querySelector('[data-testid=dl-scroller]');
        const frames = [];
        let maxRows = 0;
        const from = sc.scrollTop;
        let last = performance.now();
        for (let k = 0; k < 150; k++) {
          sc.scrollTop += px;
          await new Promise((r) => requestAnimationFrame(r));
          const t = performance.now();
          frames.push(t - last);
          last = t;
          maxRows = Math.max(maxRows, sc.querySelectorAll('[role=row]').length);
        }
        return { frames, maxRows, moved: sc.scrollTop - from };
      }, px);
    const wheel = await scroll(100);
    const fling = await scroll(600);
    const w = stats(wheel.frames);
    const f = stats(fling.frames);
    for (const x of [wheel, fling]) assert.ok(x.maxRows < 100, `${x.maxRows} rows in the page while scrolling`);
    assert.ok(wheel.moved >= 14_000 && fling.moved >= 80_000, 'it scrolled');

    // 20 jumps across the whole set: time until the rows at each position are loaded.
    const jumps = await page.evaluate(async () => {
      const sc = document.querySelector('[data-testid=dl-scroller]');
      const out = [];
      let maxRows = 0;
      for (let k = 1; k <= 20; k++) {
        const t = performance.now();
        sc.scrollTop = Math.floor((sc.scrollHeight - sc.clientHeight) * (k / 20));
        const want = Math.floor(sc.scrollTop / 34);
        for (let i = 0; i < 500; i++) {
          await new Promise((r) => requestAnimationFrame(r));
          const row = sc.querySelector(`[data-testid=dl-row][data-index="${want}"]`);
          maxRows = Math.max(maxRows, sc.querySelectorAll('[role=row]').length);
          if (row) break;
        }
        out.push(performance.now() - t);
      }
      const lastRow = sc.querySelectorAll('[data-testid=dl-row]');
      return { out, maxRows, lastIndex: Number(lastRow[lastRow.length - 1]?.getAttribute('data-index')) };
    });
    const j = stats(jumps.out);
    assert.ok(jumps.maxRows < 100, `${jumps.maxRows} rows in the page after jumps`);
    assert.ok(jumps.lastIndex >= shown - 2, `the last row (index ${jumps.lastIndex}) of ${shown} is reachable`);
    // The last page is the oldest seeded row; check it is the engine's.
    const lastApi = (await api('/api/list_dead_letters', { method: 'POST', body: { limit: 1, offset: shown - 1 } })).items[0];
    const lastPage = await page.locator(`[data-testid=dl-row][data-index="${shown - 1}"]`).getAttribute('data-id');
    assert.equal(Number(lastPage), lastApi.id);

    log(`DEAD-LETTERS @ ${shown} rows: first rows ${firstRowsMs} ms after the click`);
    log(`DEAD-LETTERS scroll: 150 frames x 100 px, frame ms p50 ${r1(w.p50)} p95 ${r1(w.p95)} max ${r1(w.max)}; max rows in DOM ${wheel.maxRows}`);
    log(`DEAD-LETTERS scroll: 150 frames x 600 px, frame ms p50 ${r1(f.p50)} p95 ${r1(f.p95)} max ${r1(f.max)}; max rows in DOM ${fling.maxRows}`);
    log(`DEAD-LETTERS 20 jumps across the set: ms to loaded rows p50 ${r1(j.p50)} p95 ${r1(j.p95)} max ${r1(j.max)}; max rows in DOM ${jumps.maxRows}`);
    assert.ok(w.p95 < 100 && f.p95 < 150, `p95 frame times ${w.p95} / ${f.p95} ms`);
    assert.ok(j.max < 3000, `slowest jump ${j.max} ms`);
  });

  it('b. filters go into the address and narrow the set as the engine does', async () => {
    const page = S.page;
    await page.getByTestId('dl-f-destination').selectOption('billing');
    await page.getByTestId('dl-f-error_class').selectOption('validation');
    await page.getByTestId('dl-f-text').fill('seed-00042');
    await waitFor('the address to carry the filters', async () => hashParams().params.get('q') === 'seed-00042');
    const { screen, params } = hashParams();
    assert.equal(screen, 'dead-letters');
    assert.equal(params.get('destination'), 'billing');
    assert.equal(params.get('error_class'), 'validation');
    const want = await apiTotal({ destination: 'billing', error_class: 'validation', text: 'seed-00042' });
    assert.ok(want > 0);
    await waitFor(`the page to show ${want}`, async () => (await pageTotal()) === want);
    const ids = await page.locator('[data-testid=dl-row]').evaluateAll((xs) => xs.map((x) => Number(x.dataset.id)));
    const apiIds = (
      await api('/api/list_dead_letters', {
        method: 'POST',
        body: { destination: 'billing', error_class: 'validation', text: 'seed-00042', limit: 100 },
      })
    ).items.map((d) => d.id);
    assert.deepEqual(ids, apiIds);
    // Reloading the address keeps the filtered view.
    await page.reload();
    await waitFor('the filtered view after a reload', async () => (await pageTotal()) === want);
    assert.equal(await page.getByTestId('dl-f-destination').inputValue(), 'billing');
    assert.equal(await page.getByTestId('dl-f-text').inputValue(), 'seed-00042');

    // Age and object too: without the text, older than 7 days, customers.
    await page.getByTestId('dl-f-text').fill('');
    await page.getByTestId('dl-f-age').selectOption('gt7d');
    await page.getByTestId('dl-f-object').fill('customer');
    await page.getByTestId('dl-f-object').press('Enter');
    await waitFor('age and object in the address', async () => {
      const p = hashParams().params;
      return p.get('age') === 'gt7d' && p.get('object') === 'customer' && !p.has('q');
    });
    const aged = { destination: 'billing', error_class: 'validation', object: 'customer', min_age_ms: 7 * 86_400_000 };
    await waitFor('the page and the engine to agree on the aged set', async () => {
      const [a, b] = [await pageTotal(), await apiTotal(aged)];
      return a !== null && a === b && b > 10_000;
    });
    // Back to the filter the next tests use.
    await page.getByTestId('dl-f-age').selectOption('');
    await page.getByTestId('dl-f-object').fill('');
    await page.getByTestId('dl-f-object').press('Enter');
    await page.getByTestId('dl-f-text').fill('seed-00042');
    await waitFor('the text filter again', async () => {
      const p = hashParams().params;
      return p.get('q') === 'seed-00042' && !p.has('age') && !p.has('object');
    });
    await waitFor(`the page to show ${want} again`, async () => (await pageTotal()) === want);
  });

  it('c. the drawer shows request, response, history and links to the record timeline', async () => {
    const page = S.page;
    const row = page.locator('[data-testid=dl-row]').first();
    const id = Number(await row.getAttribute('data-id'));
    await row.click();
    await page.getByTestId('dl-drawer').waitFor({ state: 'visible' });
    assert.equal(hashParams().params.get('dl'), String(id));
    const d = await api(`/api/dead_letter_detail?id=${id}`);
    await waitFor('the record in the drawer', async () => (await page.getByTestId('dl-d-record').textContent()) === d.dead_letter.record);
    const req = await page.getByTestId('dl-d-request').textContent();
    assert.ok(req.includes(d.dead_letter.idempotency_key), 'the request names the idempotency key');
    assert.ok((await page.getByTestId('dl-d-response').textContent()).includes('seeded'));
    const href = await page.getByTestId('dl-d-timeline').getAttribute('href');
    const target = new URLSearchParams(href.slice(href.indexOf('?') + 1));
    assert.ok(href.startsWith('#/records?'), href);
    assert.equal(target.get('q'), d.dead_letter.record);
    await page.keyboard.press('Escape');
    await waitFor('the drawer to close', async () => (await page.getByTestId('dl-drawer').count()) === 0);
    assert.equal(hashParams().params.get('dl'), null);
  });

  it('d. bulk discard shows the blast radius first; the ledger drops by exactly that many', async () => {
    const page = S.page;
    const f = { destination: 'billing', error_class: 'validation', text: 'seed-00042' };
    const before = await apiTotal(f);
    const seededBefore = await apiTotal({ text: 'customer:crm:seed-' });
    const preview = await api('/api/discard_dead_letters', { method: 'POST', body: { filter: f, dry_run: true } });
    await page.getByTestId('dl-bulk-discard').click();
    const dlg = page.getByTestId('dl-confirm');
    await dlg.waitFor({ state: 'visible' });
    const shown = Number((await page.getByTestId('dl-radius-dead_letters').textContent()).replace(/,/g, ''));
    assert.equal(shown, preview.radius.dead_letters);
    assert.equal(shown, before);
    assert.equal(Number((await page.getByTestId('dl-radius-records').textContent()).replace(/,/g, '')), preview.radius.records);
    assert.equal(await apiTotal(f), before, 'the preview changed nothing');
    assert.ok(await page.getByTestId('dl-confirm-go').isDisabled(), 'no reason, no discard');
    await page.getByTestId('dl-reason').fill('e2e: seeded rows, not real customers');
    await page.getByTestId('dl-confirm-go').click();
    await page.getByTestId('dl-done').waitFor({ state: 'visible' });
    assert.equal(await apiTotal(f), 0);
    assert.equal(await apiTotal({ text: 'customer:crm:seed-' }), seededBefore - shown, 'exactly the previewed number went');
    const resolved = await api('/api/list_dead_letters', { method: 'POST', body: { ...f, include_resolved: true, limit: 100 } });
    assert.equal(resolved.items.length, shown);
    for (const d of resolved.items) assert.equal(d.resolution, 'discarded by operator:console: e2e: seeded rows, not real customers');
    await waitFor('the page to show none', async () => (await pageTotal()) === 0);
    await page.getByTestId('dl-empty').waitFor({ state: 'visible' });
    // The preview of the whole set counts all of it (more than 100,000), and says so in the dialog.
    await clearFilters();
    await waitFor('the full table', async () => ((await pageTotal()) ?? 0) > 90_000);
    const all = await apiTotal();
    const t0 = Date.now();
    await page.getByTestId('dl-bulk-retry').click();
    await page.getByTestId('dl-confirm').waitFor({ state: 'visible' });
    const previewMs = Date.now() - t0;
    const allShown = Number((await page.getByTestId('dl-radius-dead_letters').textContent()).replace(/,/g, ''));
    assert.ok(Math.abs(allShown - all) < 50 && allShown > 99_000, `whole-set preview ${allShown}, engine total ${all}`);
    await page.getByTestId('dl-cancel').click();
    await waitFor('the dialog to close', async () => (await page.getByTestId('dl-confirm').count()) === 0);
    assert.ok((await apiTotal()) >= all - 5, 'cancel changed nothing');
    log(`DEAD-LETTERS whole-set blast radius: ${allShown} dead letters previewed in ${previewMs} ms (click to dialog)`);
    log(`DEAD-LETTERS bulk discard: previewed ${shown} dead letters / ${preview.radius.records} records / ${preview.radius.amount_cents} cents; ledger dropped by ${shown}`);
  });

  it('e. CSV export of the filtered set matches the engine', async () => {
    const page = S.page;
    await clearFilters();
    await page.getByTestId('dl-f-error_class').selectOption('auth');
    await page.getByTestId('dl-f-text').fill('seed-0123');
    await waitFor('the address', async () => hashParams().params.get('q') === 'seed-0123');
    const f = { error_class: 'auth', text: 'seed-0123' };
    const want = await apiTotal(f);
    assert.ok(want > 0);
    await waitFor(`the page to show ${want}`, async () => (await pageTotal()) === want);
    const [download] = await Promise.all([page.waitForEvent('download'), page.getByTestId('dl-export').click()]);
    const file = path.join(tmp, 'export.csv');
    await download.saveAs(file);
    const rows = parseCsv(readFileSync(file, 'utf8'));
    const [head, ...body] = rows;
    assert.deepEqual(head.slice(0, 4), ['id', 'created_at', 'created_at_ms', 'record']);
    const items = (await api('/api/list_dead_letters', { method: 'POST', body: { ...f, limit: 1000 } })).items;
    assert.equal(body.length, items.length);
    const col = (n) => head.indexOf(n);
    body.forEach((r, i) => {
      const d = items[i];
      assert.equal(Number(r[col('id')]), d.id);
      assert.equal(r[col('record')], d.record);
      assert.equal(r[col('destination')], d.destination);
      assert.equal(r[col('error_class')], d.error_class);
      assert.equal(r[col('error')], d.error);
      assert.equal(Number(r[col('attempts')]), d.attempts);
      assert.equal(r[col('idempotency_key')], d.idempotency_key);
      assert.equal(r[col('amount_cents')], d.amount_cents == null ? '' : String(d.amount_cents));
    });
    // The whole set streams too (no filter): one line per open dead letter.
    const res = await get(`${S.base}/api/export_dead_letters?token=${S.token}`, {}, 60_000);
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type'), /text\/csv/);
    const t0 = Date.now();
    const all = await res.text();
    const lines = all.split('\n').filter((l) => l !== '').length - 1;
    const total = await apiTotal();
    assert.ok(Math.abs(lines - total) < 200, `${lines} CSV lines, ${total} open`);
    log(`DEAD-LETTERS CSV: filtered export ${body.length} rows = API; full export ${lines} rows, ${all.length} bytes, body in ${Date.now() - t0} ms`);
    // Without the token there is no CSV.
    assert.equal((await get(`${S.base}/api/export_dead_letters`)).status, 401);
  });

  it('f. retry one real dead letter: resolved in the ledger, the write reaches the billing simulator', async () => {
    const page = S.page;
    // Make real dead letters: billing fails most calls for a while (two attempts per write).
    await setBillingFaults('5xx=0.7');
    let real;
    try {
      real = await waitFor(
        'a real billing dead letter',
        async () => {
          const l = await api('/api/list_dead_letters', { method: 'POST', body: { destination: 'billing', limit: 50 } });
          return l.items.find((d) => !d.record.includes('seed-'));
        },
        { timeoutMs: 90_000, intervalMs: 500 },
      );
    } finally {
      await setBillingFaults('none');
    }
    realDl = real;
    log(`real dead letter ${real.id}: ${real.record} ${real.error_class} — ${real.error}`);
    await clearFilters();
    await page.getByTestId('dl-f-text').fill(real.record);
    // The text filter reaches the address 300 ms after the last keystroke. Wait for it (and
    // its result): the newest dead letter is also in the first rows of the unfiltered list,
    // and a filter landing after the retry would clear its answer (and one landing after
    // this test would filter test g's table).
    await waitFor('the text filter in the address', async () => hashParams().params.get('q') === real.record);
    await waitFor('the filtered list', async () => ((await pageTotal()) ?? SEED) < 1000);
    await waitFor('the row', async () => (await page.locator(`[data-testid=dl-row][data-id="${real.id}"]`).count()) === 1);
    await page.locator(`[data-testid=dl-row][data-id="${real.id}"]`).click();
    await page.getByTestId('dl-drawer').waitFor({ state: 'visible' });
    await page.getByTestId('dl-d-history').waitFor({ state: 'visible' });
    assert.ok((await page.getByTestId('dl-d-history').textContent()).includes('dead_letter'));
    const [crmBefore, billingBefore] = await simRequests();
    const seq0 = Math.max(0, ...billingBefore.map((r) => r.seq));
    void crmBefore;
    await page.getByTestId('dl-d-retry').click();
    await page.getByTestId('dl-confirm').waitFor({ state: 'visible' });
    assert.equal(await page.getByTestId('dl-radius-dead_letters').textContent(), '1');
    assert.equal(await page.getByTestId('dl-radius-records').textContent(), '1');
    await page.getByTestId('dl-reason').fill('e2e: billing is back');
    const retryAt = Date.now();
    await page.getByTestId('dl-confirm-go').click();
    await page.getByTestId('dl-done').waitFor({ state: 'visible' });
    // Ledger: resolved as retried, and the record requeued (audited).
    const mine = (await api('/api/list_dead_letters', { method: 'POST', body: { ids: [real.id], include_resolved: true } })).items[0];
    assert.ok(mine.resolved_at_ms >= retryAt - 5000, 'resolved');
    assert.equal(mine.resolution, 'retried by operator:console: e2e: billing is back');
    // The record is planned again; a write for it reaches billing (or the plan finds nothing left to write).
    const outcome = await waitFor(
      'the retried record to be planned again',
      async () => {
        const t = await api(`/api/record_timeline?query=${encodeURIComponent(real.record)}`);
        const retried = t.entries.find((e) => e.kind === 'operator' && e.summary.includes('dead_letter_retry'));
        assert.ok(retried, 'the retry is in the record timeline');
        const w = t.entries.find((e) => e.kind === 'write' && e.side === 'billing' && e.id > 0 && e.at_ms >= retried.at_ms && e.state === 'done');
        if (w) return { write: w };
        const settled = t.entries.find((e) => e.kind === 'decision' && e.at_ms >= retried.at_ms);
        return settled && Date.now() - retryAt > 15_000 ? { decision: settled } : null;
      },
      { timeoutMs: 45_000, intervalMs: 500 },
    );
    if (outcome.write) {
      const [, billing] = await simRequests();
      const hit = billing.find((r) => r.seq > seq0 && r.idempotency_key === outcome.write.idempotency_key && r.mutating);
      assert.ok(hit, `billing saw ${outcome.write.idempotency_key}`);
      assert.ok(hit.applied || hit.replayed, 'and applied it');
      log(`DEAD-LETTERS retry: dead letter ${real.id} resolved; write ${outcome.write.id} (${outcome.write.idempotency_key}) applied by billing ${Date.now() - retryAt} ms after the click`);
    } else {
      log(`DEAD-LETTERS retry: dead letter ${real.id} resolved; the replan decided "${outcome.decision.summary}" (nothing left to write)`);
    }
  });

  it('g. screenshot: the retried dead letter in the drawer over the 100k table', async () => {
    const page = S.page;
    await clearFilters();
    await waitFor('the full table', async () => ((await pageTotal()) ?? 0) > 90_000);
    // The drawer opens from the address too (a shared link), also for a resolved one.
    assert.ok(realDl, 'test f found a real dead letter');
    await page.evaluate((id) => (window.location.hash = `#/dead-letters?dl=${id}`), realDl.id);
    await page.getByTestId('dl-d-resolution').waitFor({ state: 'visible' });
    assert.match(await page.getByTestId('dl-d-resolution').textContent(), /^retried by operator:console/);
    await page.getByTestId('dl-d-history').waitFor({ state: 'visible' });
    assert.ok((await page.getByTestId('dl-d-history').textContent()).includes('dead_letter_retry'));
    await sleep(300);
    const SCREENSHOT = screenshotPath('dead-letters.png');
    await page.screenshot({ path: SCREENSHOT, fullPage: false });
    assert.ok(statSync(SCREENSHOT).size > 20_000, 'the screenshot looks empty');
    log(`screenshot: ${SCREENSHOT}`);
  });

  it('ran without script errors or CSP violations', () => {
    assert.deepEqual(S.pageProblems, []);
  });
});
