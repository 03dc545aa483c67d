// Browser end-to-end test of the Reconciliation screen against a real `driftless serve --demo`
// (seeded faults), in headless Chromium; see ./harness.mjs.
//
// Drift is made the way the reconciler exists for: a CRM-owned field (`lifecyclestage`) is
// edited in the CRM while the simulator drops its webhooks (`POST /_sim/suppress_webhooks`),
// so the engine never hears of it. Then, all from the screen: Run now → progress → the
// finished run with its rate → the mismatch by field → select it → preview (nothing written)
// → repair (billing shows the CRM's value) → the next run no longer has it; the CSV download
// is the API's export; an older run offers no repair.
//
//   DRIFTLESS_BIN=../target/debug/driftless node --test e2e/reconciliation.e2e.mjs
//
// Env: see harness.mjs; screenshots go to the screenshots folder.

import assert from 'node:assert/strict';
import { readFileSync, statSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';

import { api, appliedWrites, closeAll, get, log, openConsole, S, sleep, screenshotPath, waitFor } from './harness.mjs';


/** The simulators' API credentials in the demo (src/sim/mod.rs SimConfig::default). */
const CRM_TOKEN = 'pat-sim';

let sims = null;
async function sim() {
  sims ??= (await api('/api/overview')).systems;
  return { crm: sims.crm.base_url.replace(/\/+$/, ''), billing: sims.billing.base_url.replace(/\/+$/, '') };
}

async function billingCustomers() {
  const res = await get(`${(await sim()).billing}/_sim/state`);
  assert.equal(res.status, 200);
  return (await res.json()).customers;
}

async function crmContact(id) {
  const res = await get(`${(await sim()).crm}/crm/v3/objects/contacts/${id}?properties=lifecyclestage,email`, {
    headers: { Authorization: `Bearer ${CRM_TOKEN}` },
  });
  assert.equal(res.status, 200, `GET contact ${id}`);
  return res.json();
}

/**
 * A CRM API write, retried while the seeded faults answer 5xx or 429 (a create is checked for
 * a duplicate by email first); the record's id.
 */
async function crmWrite(url, method, body, ok) {
  for (let i = 0; i < 10; i++) {
    const r = await get(url, {
      method,
      headers: { Authorization: `Bearer ${CRM_TOKEN}`, 'Content-Type': 'application/json' },
      body: JSON.stringify(body),
    });
    if (ok.includes(r.status)) return (await r.json()).id;
    if (method === 'POST' && body.properties?.email) {
      // A timeout after commit made it anyway: find it rather than make a second.
      const st = await (await get(`${url.replace(/\/crm\/v3.*$/, '')}/_sim/state`)).json();
      const made = (st.contacts ?? []).find((c) => c.properties?.email === body.properties.email);
      if (made) return made.id;
    }
    await sleep(300);
  }
  assert.fail(`${method} ${url} kept failing`);
}

async function suppressCrmWebhooks(on) {
  const res = await get(`${(await sim()).crm}/_sim/suppress_webhooks`, { method: 'POST', body: JSON.stringify({ on }) });
  assert.equal(res.status, 200, `POST /_sim/suppress_webhooks ${on}`);
}

const runs = () => api('/api/reconcile_runs');
const report = (id) => api(`/api/reconcile_report?id=${id}`);

async function screenshot(name) {
  const file = screenshotPath(`${name}.png`);
  await sleep(300);
  await S.page.screenshot({ path: file, fullPage: false });
  assert.ok(statSync(file).size > 15_000, `the ${name} screenshot looks empty`);
  log(`screenshot: ${file}`);
}

/** Click Run now and wait until a new finished run is listed (by the API and on the screen). */
async function runNowFromScreen(before) {
  const page = S.page;
  await page.getByTestId('recon-run').click();
  // Progress is shown while it runs (a demo run may also finish before the next poll).
  const sawProgress = await page
    .getByTestId('recon-progress')
    .waitFor({ state: 'visible', timeout: 5000 })
    .then(() => true)
    .catch(() => false);
  const list = await waitFor('a new finished run', async () => {
    const l = await runs();
    return l.length > before && l;
  }, { timeoutMs: 120_000, intervalMs: 500 });
  const run = list[0];
  await page.locator(`[data-testid=recon-run-row][data-id="${run.id}"]`).waitFor({ state: 'visible', timeout: 20_000 });
  log(`run ${run.id}: ${run.compared} compared, ${run.mismatched} mismatched (progress seen: ${sawProgress})`);
  return { run, sawProgress };
}

const C = {};

describe('reconciliation screen in Chromium', { concurrency: 1 }, () => {
  before(async () => {
    // The demo's actors off: every change to a record is this test's own, so drift stays put
    // until the repair (an actor's event on the record would re-plan it and heal it first).
    await openConsole(['--actors', 'off']);
  });

  after(async () => {
    await closeAll();
    if (S.pageProblems.length) log(`page problems:\n${S.pageProblems.join('\n')}`);
  });

  it('a. Run now shows progress, then the finished run with its rate', async () => {
    const page = S.page;
    // Four contacts of our own, synced by the engine (webhooks on).
    const s = await sim();
    C.contacts = [];
    for (let i = 0; i < 4; i++) {
      const email = `recon-e2e-${i}@example.test`;
      const id = await crmWrite(`${s.crm}/crm/v3/objects/contacts`, 'POST', { properties: { email, lifecyclestage: 'lead' } }, [200, 201]);
      C.contacts.push({ crmId: id, stage: 'lead', email });
    }
    for (const p of C.contacts) {
      const cus = await waitFor(
        `a billing customer for contact ${p.crmId} with its lifecycle`,
        async () => (await billingCustomers()).find((c) => c.metadata?.driftless_crm_contact_id === p.crmId && c.metadata?.lifecycle_stage === 'lead'),
        { timeoutMs: 60_000, intervalMs: 500 },
      );
      p.cus = cus.id;
    }
    // Settled: nothing queued, pending or being written (the default fault profile delays and
    // duplicates webhooks, so the last mirror write can land a moment after the customer).
    await waitFor('the engine to settle', async () => {
      const st = await api('/api/status');
      const writing = Object.values(st.writes).some((w) => w.pending > 0);
      return st.queue_depth === 0 && (st.events.pending ?? 0) === 0 && !writing;
    }, { timeoutMs: 60_000, intervalMs: 500 });
    await page.goto(`${S.base}/?token=${S.token}#/reconciliation`);
    await page.getByTestId('screen-reconciliation').waitFor({ state: 'visible' });
    assert.equal((await runs()).length, 0, 'no run yet');
    const { run } = await runNowFromScreen(0);
    const row = page.locator(`[data-testid=recon-run-row][data-id="${run.id}"]`);
    assert.equal(Number(await row.getAttribute('data-rate')), run.mismatch_rate);
    assert.equal(Number(await row.getAttribute('data-mismatched')), run.mismatched);
    assert.equal(run.trigger, 'console');
    assert.ok(run.compared >= 4, `compared ${run.compared}`);
    if (run.mismatched !== 0) {
      const r = await api(`/api/reconcile_report?id=${run.id}`);
      assert.fail(`all in sync before the drift, but: ${JSON.stringify(r.mismatches)}`);
    }
    await page.locator(`[data-testid=recon-report][data-run="${run.id}"]`).waitFor({ state: 'visible' });
    C.first = run;
  });

  it('b. drift no webhook delivered is found by field, with both values', async () => {
    const page = S.page;
    // Two of them drifted: the CRM edit's webhook is dropped.
    const s = await sim();
    const picks = C.contacts.slice(0, 2);
    await suppressCrmWebhooks(true);
    try {
      for (const p of picks) {
        p.to = p.stage === 'opportunity' ? 'evangelist' : 'opportunity';
        await crmWrite(`${s.crm}/crm/v3/objects/contacts/${p.crmId}`, 'PATCH', { properties: { lifecyclestage: p.to } }, [200]);
      }
    } finally {
      await suppressCrmWebhooks(false);
    }
    log(`drift: ${picks.map((p) => `${p.crmId} ${p.stage} → ${p.to}`).join(', ')}`);
    const { run } = await runNowFromScreen(1);
    const rep = await report(run.id);
    const drifted = picks.filter((p) =>
      rep.mismatches.some((m) => m.entity_key === `customer:crm:${p.crmId}` && m.kind === 'field' && m.name === 'lifecycle_stage'),
    );
    assert.equal(drifted.length, 2, `the run found both: ${JSON.stringify(rep.by_field)}`);
    const mine = drifted[0];
    const m = rep.mismatches.find((x) => x.entity_key === `customer:crm:${mine.crmId}` && x.name === 'lifecycle_stage');
    assert.equal(m.crm_value, mine.to);
    assert.equal(m.billing_value, mine.stage);
    assert.equal(m.owner, 'crm');
    // The screen shows it by field and in the table, with both values.
    const byField = page.getByTestId('recon-by-field').locator('button[data-name="lifecycle_stage"]');
    assert.equal(Number(await byField.getAttribute('data-count')), rep.by_field.lifecycle_stage);
    const row = page.locator(`[data-testid=recon-mismatch][data-record="customer:crm:${mine.crmId}"][data-kind=field][data-name=lifecycle_stage]`);
    await row.waitFor({ state: 'visible' });
    assert.match(await row.innerText(), new RegExp(`${mine.to}[\\s\\S]*${mine.stage}`));
    for (const rule of Object.keys(rep.by_rule)) {
      assert.equal(await page.getByTestId('recon-by-rule').locator(`button[data-name="${rule}"]`).count(), 1, rule);
    }
    C.second = run;
    C.second_report = rep;
    C.mine = mine;
  });

  it('c. filter by field, select the record, preview (nothing written), then repair', async () => {
    assert.ok(C.mine, 'b found the drift');
    const page = S.page;
    const key = `customer:crm:${C.mine.crmId}`;
    await page.getByTestId('recon-by-field').locator('button[data-name="lifecycle_stage"]').click();
    await waitFor('the field in the address', async () => (await page.evaluate(() => location.hash)).includes('field=lifecycle_stage'));
    const kinds = await page.locator('[data-testid=recon-mismatch]').evaluateAll((rows) => rows.map((r) => r.dataset.name));
    assert.ok(kinds.length >= 1 && kinds.every((k) => k === 'lifecycle_stage'), `only lifecycle_stage rows: ${kinds}`);
    await page.locator(`[data-testid=recon-mismatch][data-record="${key}"][data-kind=field] input[type=checkbox]`).check();
    const before = await appliedWrites();
    await page.getByTestId('recon-preview').click();
    const preview = page.getByTestId('recon-preview-result');
    await preview.waitFor({ state: 'visible' });
    log(`preview: ${(await preview.innerText()).replace(/\s+/g, ' ')}`);
    assert.ok(Number(await preview.getAttribute('data-updates')) >= 1, 'the preview plans an update');
    assert.match(await preview.innerText(), new RegExp(key));
    await sleep(1000);
    const cusAfterPreview = (await billingCustomers()).find((c) => c.id === C.mine.cus);
    assert.equal(cusAfterPreview.metadata.lifecycle_stage, C.mine.stage, 'the preview wrote nothing to billing');
    const afterPreview = await appliedWrites();
    assert.equal(
      afterPreview.w.billing.filter((w) => w.seq > before.maxSeq.billing && w.path.includes(C.mine.cus)).length,
      0,
      'no write to that customer after the preview',
    );
    await page.getByTestId('recon-repair-run').click();
    await page.getByTestId('recon-repaired').waitFor({ state: 'visible' });
    const replayRun = Number(await page.getByTestId('recon-repaired').getAttribute('data-run'));
    assert.ok(replayRun > 0, 'the repair was queued as a replay run');
    await waitFor(
      'billing to show the CRM value',
      async () => (await billingCustomers()).find((c) => c.id === C.mine.cus)?.metadata?.lifecycle_stage === C.mine.to,
      { timeoutMs: 30_000, intervalMs: 500 },
    );
    const audit = await api('/api/list_audit', { method: 'POST', body: { actor: 'operator:console', action: 'replay', record: null, text: null, from_ms: null, to_ms: null, limit: 20, offset: 0 } });
    log(`audit rows for the repair: ${audit.total}`);
    C.repaired = true;
  });

  it('d. the next run no longer has it, with fewer mismatches; an older run offers no repair', async () => {
    assert.ok(C.mine && C.repaired, 'c repaired the drift');
    const page = S.page;
    const { run } = await runNowFromScreen(2);
    const rep = await report(run.id);
    const key = `customer:crm:${C.mine.crmId}`;
    assert.ok(!rep.mismatches.some((m) => m.entity_key === key && m.kind !== 'missed_event'), `${key} is repaired`);
    assert.ok(run.mismatched < C.second.mismatched, `fewer mismatches: ${run.mismatched} < ${C.second.mismatched}`);
    // The rate chart has a point per run.
    assert.equal(Number(await page.getByTestId('chart-reconcile-rate').getAttribute('data-points')), 3);
    // An older run: looked at, not repairable.
    await page.locator(`[data-testid=recon-run-row][data-id="${C.second.id}"] button`).click();
    await page.locator(`[data-testid=recon-report][data-run="${C.second.id}"]`).waitFor({ state: 'visible' });
    await page.getByTestId('recon-stale').waitFor({ state: 'visible' });
    assert.equal(await page.getByTestId('recon-preview').count(), 0);
    const refused = await get(`${S.base}/api/reconcile_repair`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${S.token}`, 'Content-Type': 'application/json' },
      body: JSON.stringify({ run_id: C.second.id, records: ['all'], dry_run: true }),
    });
    assert.equal(refused.status, 400, 'the engine refuses an older run too');
    C.third = run;
  });

  it('e. the CSV download is the API export of the run; screenshot', async () => {
    assert.ok(C.second, 'b made a run with drift');
    const page = S.page;
    await page.locator(`[data-testid=recon-run-row][data-id="${C.second.id}"] button`).click();
    await page.locator(`[data-testid=recon-report][data-run="${C.second.id}"]`).waitFor({ state: 'visible' });
    const [download] = await Promise.all([page.waitForEvent('download'), page.getByTestId('recon-export').click()]);
    const file = await download.path();
    const text = readFileSync(file, 'utf8');
    const res = await get(`${S.base}/api/reconcile_csv?id=${C.second.id}`, { headers: { Authorization: `Bearer ${S.token}` } });
    assert.equal(res.status, 200);
    assert.equal(text, await res.text(), 'the download is the API export');
    const lines = text.trim().split('\n');
    assert.equal(lines[0], 'run,record,kind,name,crm_value,billing_value,owner,first_seen,detail');
    assert.equal(lines.length - 1, C.second_report.mismatches.length);
    assert.ok(lines.some((l) => l.includes(`customer:crm:${C.mine.crmId},field,lifecycle_stage,${C.mine.to},${C.mine.stage},crm`)));
    // The screenshot: the latest run with its by-field breakdown and the rate over time.
    await page.goto(`${S.base}/?token=${S.token}#/reconciliation?run=${C.second.id}`);
    await page.locator(`[data-testid=recon-report][data-run="${C.second.id}"]`).waitFor({ state: 'visible' });
    await screenshot('reconciliation');
    assert.deepEqual(S.pageProblems, []);
  });
});
