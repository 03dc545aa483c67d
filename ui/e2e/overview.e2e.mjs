// Browser end-to-end test of the overview against a real `driftless serve --demo`, in
// Debian's headless Chromium driven by playwright-core (no browser download); the server,
// browser and helpers are in ./harness.mjs.
//
//   DRIFTLESS_BIN=../target/debug/driftless npm run e2e
//
// Env: see harness.mjs. Screenshot: overview.png in the screenshots folder (harness.mjs).

import assert from 'node:assert/strict';
import { statSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';

import {
  api,
  appliedWrites,
  closeAll,
  ensureResumed,
  everyWriteHeld,
  get,
  heldTotal,
  log,
  openConsole,
  painted,
  run,
  S,
  screenshotPath,
  status,
  waitFor,
  writesAfter,
  BIN,
} from './harness.mjs';

const EVENT_STATES = ['pending', 'applied', 'duplicate', 'echo', 'superseded', 'conflicted', 'dead_lettered'];
const CHART_IDS = ['lag', 'drops', 'rate_limited', 'rate_wait', 'queue_depth', 'error_rate', 'backlog'];
/** `status.events.pending` at or under this counts as "drained" (the demo keeps adding events). */
const LOW_PENDING = 10;

// ---------------------------------------------------------------------------------------------
// Helpers

/** The counters the page must show, from a `Status`, keyed by data-testid. */
function expectedCounters(s) {
  const out = {};
  for (const st of EVENT_STATES) out[`counter-events-${st}`] = String(s.events[st] ?? 0);
  out['counter-events_total'] = String(s.events_total);
  out['counter-queue_depth'] = String(s.queue_depth);
  out['counter-dead_letter_depth'] = String(s.dead_letter_depth);
  out['counter-review_depth'] = String(s.review_depth);
  for (const d of ['crm', 'billing']) {
    out[`counter-writes-${d}-done`] = String(s.writes[d]?.done ?? 0);
    out[`counter-writes-${d}-pending`] = String(s.writes[d]?.pending ?? 0);
  }
  out['counter-lag-p50'] = String(s.lag_ms.p50);
  out['counter-lag-p95'] = String(s.lag_ms.p95);
  out['counter-lag-max'] = String(s.lag_ms.max);
  return out;
}

function diff(want, got) {
  return Object.keys(want)
    .filter((k) => want[k] !== got[k])
    .map((k) => `${k}: page ${JSON.stringify(got[k])} vs status ${want[k]}`);
}

async function pageCounters(page) {
  return page.evaluate(() => {
    const out = {};
    for (const el of document.querySelectorAll('[data-testid^="counter-"]')) {
      out[el.getAttribute('data-testid')] = el.textContent.trim();
    }
    const at = document.querySelector('[data-testid="updated-at"]');
    return { counters: out, at: at ? Number(at.getAttribute('data-ms')) : 0 };
  });
}

// ---------------------------------------------------------------------------------------------

describe('driftless console in Chromium', { concurrency: 1 }, () => {
  before(async () => {
    await openConsole();
  });

  after(async () => {
    await closeAll();
  });

  it('keeps the token out of the address bar once loaded', async () => {
    const url = new URL(S.page.url());
    assert.equal(url.searchParams.get('token'), null, `token still in ${url}`);
    const stored = await S.page.evaluate(() => sessionStorage.getItem('driftless.token'));
    assert.equal(stored, S.token);
  });

  it('a. shows the same numbers as `driftless status --json` and /api/status', async () => {
    const page = S.page;
    // Pausing quiets the ledger (no writes, so fewer counters move); webhooks still arrive.
    await api('/api/pause_outbound', { method: 'POST', body: { scope: 'global', reason: 'e2e: snapshot' } });
    try {
      // The CLI and the API read the same ledger: compare the CLI with two API reads taken
      // around it, accepting the first try where nothing moved in between.
      let cliMatched = false;
      for (let i = 0; i < 15 && !cliMatched; i++) {
        const before = await status();
        const cli = JSON.parse(await run(BIN, ['status', '--json', '--ledger', S.ledger]));
        const afterS = await status();
        if (JSON.stringify(before) !== JSON.stringify(afterS)) continue;
        // The CLI prints the ledger's figures; the API adds the contract version in force and
        // the running engine's rate budgets (in-memory state another process cannot see).
        const { contract_version: version, budgets, ...figures } = before;
        const { contract_version: cliVersion, budgets: _cliBudgets, ...cliFigures } = cli;
        assert.deepEqual(budgets.map((b) => b.destination).sort(), ['billing', 'crm'], 'the API shows both budgets');
        assert.deepEqual(cliFigures, figures, 'driftless status --json differs from /api/status');
        if (cliVersion !== undefined) assert.equal(cliVersion, version);
        cliMatched = true;
      }
      assert.ok(cliMatched, 'the ledger never held still long enough to compare the CLI with the API');

      // The page with /api/status fetched in the same instant, right after a fresh update.
      let lastDiff = [];
      for (let i = 0; i < 30; i++) {
        const prev = (await pageCounters(page)).at;
        await waitFor('a fresh overview on the page', async () => (await pageCounters(page)).at > prev, {
          timeoutMs: 5000,
          intervalMs: 50,
        });
        const [p1, s, p2] = [await pageCounters(page), await status(), await pageCounters(page)];
        if (p1.at !== p2.at) continue;
        lastDiff = diff(expectedCounters(s), p1.counters);
        if (lastDiff.length === 0) {
          log(`page matched /api/status on try ${i + 1}: events_total ${s.events_total}`);
          return;
        }
      }
      assert.fail(`the page never matched /api/status; last differences:\n${lastDiff.join('\n')}`);
    } finally {
      await ensureResumed();
    }
  });

  it('b. Pause (global, with a reason) stops all writes while events keep arriving', async () => {
    const page = S.page;
    await ensureResumed();
    // Let the engine write something first, so "stopped" means something.
    await waitFor('the engine to write to the simulators', async () => (await appliedWrites()).count > 0, {
      timeoutMs: 30_000,
      intervalMs: 500,
    });
    await page.getByTestId('pause-global').click();
    await page.getByTestId('pause-reason').fill('e2e: billing migration');
    await page.getByTestId('pause-confirm').click();
    await page.getByTestId('pause-banner').waitFor({ state: 'visible', timeout: 5000 });
    const confirmedAt = Date.now();
    // A write already on the wire when the pause landed may still complete: the baseline is
    // taken once every planned write is held by the gate (none can be on its way).
    const first = await waitFor('every planned write held by the pause', async () => {
      const x = await status();
      return everyWriteHeld(x) ? x : null;
    }, { timeoutMs: 60_000 });
    const base = await appliedWrites();
    const eventsBefore = first.events_total;
    log(`paused; ${base.count} applied writes at the simulators, events_total ${eventsBefore}, held ${heldTotal(first)}`);

    // Events keep arriving: wait until new ones are in, new writes were planned for them and
    // every planned write is held again — the engine did its work, and only then is "no write
    // reached the simulators" a finding rather than a window that was too short.
    const s = await waitFor('new events, their writes planned and held', async () => {
      const x = await status();
      return x.events_total > eventsBefore && heldTotal(x) > heldTotal(first) && everyWriteHeld(x) ? x : null;
    }, { timeoutMs: 60_000 });
    const now = await appliedWrites();
    const leaked = writesAfter(now, base.maxSeq);
    assert.equal(
      leaked.length,
      0,
      `writes reached the simulators while paused: ${JSON.stringify(leaked.slice(0, 5))} (paused at ${confirmedAt})`,
    );
    assert.equal(now.count, base.count, 'the number of applied writes grew while paused');
    assert.ok(s.events_total > eventsBefore, `events stopped arriving (events_total stayed ${eventsBefore})`);
    assert.ok(s.paused.some((p) => p.scope === 'global' && p.reason === 'e2e: billing migration'));

    const banner = (await page.getByTestId('pause-banner').textContent()).replace(/\s+/g, ' ');
    assert.match(banner, /All outbound writes paused/);
    assert.match(banner, /e2e: billing migration/);
    assert.match(banner, /operator:console/);
    assert.match(banner, /since \d\d:\d\d:\d\d/);
    assert.equal(await page.title(), 'driftless — PAUSED');
    assert.equal(await page.getByTestId('health').getAttribute('data-state'), 'paused');
    log(
      `events_total ${eventsBefore} → ${s.events_total}, held writes ${heldTotal(first)} → ${heldTotal(s)} ` +
        `(${Date.now() - confirmedAt} ms) while no write reached either system`,
    );
  });

  it('c. Resume drains the backlog', async () => {
    const page = S.page;
    if (!(await status()).paused.some((p) => p.scope === 'global')) {
      await api('/api/pause_outbound', { method: 'POST', body: { scope: 'global', reason: 'e2e: backlog' } });
    }
    // A backlog to drain: writes planned and held by the pause.
    await waitFor('a held write', async () => heldTotal(await status()) > 0, { timeoutMs: 30_000 });
    const base = await appliedWrites();
    const pendingBefore = (await status()).events.pending;
    const t0 = Date.now();
    await page.getByTestId('resume-global').click();
    await page.getByTestId('pause-banner').waitFor({ state: 'detached', timeout: 5000 });
    assert.equal(await page.title(), 'driftless');

    const drained = await waitFor(
      `writes at the simulators and events.pending ≤ ${LOW_PENDING}`,
      async () => {
        const w = writesAfter(await appliedWrites(), base.maxSeq);
        const s = await status();
        return w.length > 0 && s.events.pending <= LOW_PENDING ? { writes: w.length, pending: s.events.pending } : null;
      },
      { timeoutMs: 30_000, intervalMs: 500 },
    );
    log(
      `resumed: pending ${pendingBefore} → ${drained.pending}, ${drained.writes} writes in ${Date.now() - t0} ms`,
    );
    // The page follows: its pending counter is low too.
    await waitFor('the page to show the drained backlog', async () => {
      const { counters } = await pageCounters(page);
      return Number(counters['counter-events-pending']) <= LOW_PENDING;
    });
  });

  it('d. refuses requests without the token, and says so on the page', async () => {
    for (const p of ['/api/status', '/api/stream', '/api/overview']) {
      const res = await get(`${S.base}${p}`);
      assert.equal(res.status, 401, `GET ${p} without a token`);
      const body = await res.json();
      assert.equal(body.code, 'unauthorized');
    }
    const wrong = await get(`${S.base}/api/stream?token=not-the-token`);
    assert.equal(wrong.status, 401, 'GET /api/stream with a wrong token');
    await wrong.body?.cancel();

    // A fresh browser (no stored token) opening the bare address.
    const ctx = await S.browser.newContext({ viewport: { width: 1280, height: 800 } });
    try {
      const page = await ctx.newPage();
      await page.goto(`${S.base}/`);
      const err = page.getByTestId('error-state');
      await err.waitFor({ state: 'visible', timeout: 10_000 });
      assert.match(await err.textContent(), /This link's token is wrong or expired: open the URL driftless printed/);
      assert.equal(await err.getAttribute('data-code'), 'unauthorized');
    } finally {
      await ctx.close();
    }
  });

  it('e. draws every chart, and takes a screenshot after a minute of demo activity', async () => {
    const page = S.page;
    // A minute of activity, as the engine recorded it: points in three minutes of the chart
    // (from within the first to within the third is more than a minute).
    await waitFor(
      'the lag chart to have points in three minutes',
      async () => Number(await page.getByTestId('chart-lag').getAttribute('data-points')) >= 3,
      { timeoutMs: 180_000, intervalMs: 1000 },
    );
    log(`a minute of demo activity charted, ${Math.round((Date.now() - S.startedAt) / 1000)} s after the start`);
    for (const id of CHART_IDS) {
      const chart = page.getByTestId(`chart-${id}`);
      await chart.waitFor({ state: 'visible' });
      assert.equal(await chart.locator('canvas').count(), 1, `chart-${id} has no canvas`);
    }
    await page.getByTestId('reconciliation').waitFor({ state: 'visible' });
    assert.match(await page.getByTestId('reconciliation').textContent(), /\S/);
    await page.getByTestId('updated-at').waitFor({ state: 'visible' });
    // A settled, current frame: the next update arrives, then the page paints it.
    const prev = (await pageCounters(page)).at;
    await waitFor('a fresh overview on the page', async () => (await pageCounters(page)).at > prev, {
      timeoutMs: 5000,
      intervalMs: 50,
    });
    await painted(page);
    const SCREENSHOT = screenshotPath('overview.png');
    await page.screenshot({ path: SCREENSHOT, fullPage: false });
    assert.ok(statSync(SCREENSHOT).size > 20_000, 'the screenshot looks empty');
    log(`screenshot: ${SCREENSHOT}`);
  });

  it('f. runs a reconciliation from the panel and shows the report of the engine', async () => {
    const page = S.page;
    const before = await api('/api/reconciliation_state');
    await page.getByTestId('reconcile-run').click();
    const st = await waitFor(
      'the console-started run to finish',
      async () => {
        const v = await api('/api/reconciliation_state');
        return !v.running && v.last && v.last.run.id !== before.last?.run.id ? v : null;
      },
      { timeoutMs: 90_000, intervalMs: 1000 },
    );
    assert.equal(st.last.run.trigger, 'console', 'the run was started from the console');
    assert.ok(st.last.compared > 0, 'the run compared records');
    await waitFor('the panel to show the run', async () =>
      (await page.getByTestId('reconciliation').textContent()).includes(`${st.last.compared} records compared`),
    );
    assert.ok(await page.getByTestId('reconcile-last').isVisible());
    assert.ok(await page.getByTestId('reconcile-run').isEnabled(), 'Run now is offered again');
  });

  it('ran without script errors or CSP violations', () => {
    assert.deepEqual(S.pageProblems, []);
  });
});
