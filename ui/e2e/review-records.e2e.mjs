// Browser end-to-end test of the Review (conflicts) and Records (timeline) screens against a
// real `driftless serve --demo` (seeded faults), in headless Chromium; see ./harness.mjs.
//
// The conflict is made the way it happens in the field: sales asks for one plan in the CRM
// (`requested_plan`, a shared field with `conflict = "review"` in the default contract) while
// finance moves the same subscription to another plan in billing, both before driftless hears
// of either (the simulators hold their webhooks back for a few seconds). The engine then sees
// both sides changed since the last sync and queues the record for review.
//
//   DRIFTLESS_BIN=../target/debug/driftless node --test e2e/review-records.e2e.mjs
//
// Env: see harness.mjs; screenshots go to the screenshots folder.

import assert from 'node:assert/strict';
import { statSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';

import { api, closeAll, get, log, openConsole, S, simRequests, sleep, screenshotPath, waitFor } from './harness.mjs';


/** The simulators' API credentials in the demo (src/sim/mod.rs SimConfig::default). */
const CRM_TOKEN = 'pat-sim';
const BILLING_KEY = 'sk_test_sim';

let sims = null;
async function sim() {
  sims ??= (await api('/api/overview')).systems;
  return { crm: sims.crm.base_url.replace(/\/+$/, ''), billing: sims.billing.base_url.replace(/\/+$/, '') };
}

async function billingState() {
  const res = await get(`${(await sim()).billing}/_sim/state`);
  assert.equal(res.status, 200);
  return res.json();
}

async function crmContact(id) {
  const res = await get(`${(await sim()).crm}/crm/v3/objects/contacts/${id}?properties=requested_plan,plan,email`, {
    headers: { Authorization: `Bearer ${CRM_TOKEN}` },
  });
  assert.equal(res.status, 200, `GET contact ${id}`);
  return res.json();
}

async function setFaults(profile) {
  const s = await sim();
  for (const u of [s.crm, s.billing]) {
    const res = await get(`${u}/_sim/faults`, { method: 'POST', body: profile });
    assert.equal(res.status, 200, `POST ${u}/_sim/faults ${profile}`);
  }
}

const planOf = (st, sub) => st.prices.find((p) => p.id === sub.items.data[0].price.id)?.lookup_key ?? null;

/** A live subscription whose contact has its plan request in sync (nothing in flight). */
async function pickSyncedSubscription(avoid) {
  return waitFor(
    'a live subscription whose contact is in sync',
    async () => {
      const st = await billingState();
      const open = new Set((await api('/api/list_reviews')).map((r) => r.record));
      for (const sub of st.subscriptions.filter((s) => s.status === 'active' && !avoid.has(s.id))) {
        const cus = st.customers.find((c) => c.id === sub.customer);
        const crmId = cus?.metadata?.driftless_crm_contact_id;
        if (!crmId || open.has(`customer:crm:${crmId}`)) continue;
        const plan = planOf(st, sub);
        const contact = await crmContact(crmId);
        if (plan && contact.properties?.requested_plan === plan) return { sub, cus, crmId, plan };
      }
      return null;
    },
    { timeoutMs: 60_000, intervalMs: 1000 },
  );
}

/** Both sides change `requested_plan` before driftless hears of either; returns the review item. */
async function makeConflict() {
  const tried = new Set();
  for (let attempt = 1; attempt <= 3; attempt++) {
    const { sub, cus, crmId, plan } = await pickSyncedSubscription(tried);
    tried.add(sub.id);
    const st = await billingState();
    const [crmPlan, billingPlan] = st.prices.map((p) => p.lookup_key).filter((k) => k !== plan);
    const billingPrice = st.prices.find((p) => p.lookup_key === billingPlan).id;
    const s = await sim();
    // Hold every webhook back 1..3 s (no other fault, so our own edits are not refused).
    await setFaults('none,reorder=1,delay=3000');
    let statuses;
    try {
      statuses = await Promise.all([
        get(`${s.crm}/crm/v3/objects/contacts/${crmId}`, {
          method: 'PATCH',
          headers: { Authorization: `Bearer ${CRM_TOKEN}`, 'Content-Type': 'application/json' },
          body: JSON.stringify({ properties: { requested_plan: crmPlan } }),
        }).then((r) => r.status),
        get(`${s.billing}/v1/subscriptions/${sub.id}`, {
          method: 'POST',
          headers: { Authorization: `Bearer ${BILLING_KEY}`, 'Content-Type': 'application/x-www-form-urlencoded' },
          body: new URLSearchParams({ 'items[0][id]': sub.items.data[0].id, 'items[0][price]': billingPrice }),
        }).then((r) => r.status),
      ]);
    } finally {
      await setFaults('default');
    }
    assert.deepEqual(statuses, [200, 200], 'both simulators took the edit');
    const record = `customer:crm:${crmId}`;
    log(`attempt ${attempt}: ${record} requested ${crmPlan} in the CRM, ${sub.id} moved ${plan} → ${billingPlan} in billing`);
    const item = await waitFor(
      `a review item for ${record}`,
      async () => (await api('/api/list_reviews')).find((r) => r.record === record),
      { timeoutMs: 20_000, intervalMs: 500 },
    ).catch(() => null);
    if (item) return { item, sub, cus, crmId, crmPlan, billingPlan };
    log(`attempt ${attempt}: the engine settled one side before the other arrived; trying another record`);
  }
  assert.fail('no conflict reached the review queue in 3 attempts');
}

async function screenshot(name) {
  const file = screenshotPath(`${name}.png`);
  await sleep(300);
  await S.page.screenshot({ path: file, fullPage: false });
  assert.ok(statSync(file).size > 15_000, `the ${name} screenshot looks empty`);
  log(`screenshot: ${file}`);
}

const C = {};

describe('review and records screens in Chromium', { concurrency: 1 }, () => {
  before(async () => {
    await openConsole();
  });

  after(async () => {
    await closeAll();
  });

  it('a. a conflict made in both simulators shows side by side in the review queue', async () => {
    Object.assign(C, await makeConflict());
    const page = S.page;
    await page.getByTestId('nav-review').click();
    await page.getByTestId('screen-review').waitFor({ state: 'visible' });
    // Open it through its address, as a link from another screen would.
    await page.evaluate((id) => (location.hash = `#/review?id=${id}`), C.item.id);
    const item = page.getByTestId('review-item');
    await waitFor('the conflicted record on the page', async () => (await item.getAttribute('data-id')) === String(C.item.id));
    assert.equal(await item.getAttribute('data-record'), C.item.record);
    const row = page.locator('[data-testid=review-field][data-field=requested_plan]');
    assert.equal((await row.getByTestId('review-crm').textContent()).trim(), C.crmPlan);
    assert.equal((await row.getByTestId('review-billing').textContent()).trim(), C.billingPlan);
    assert.match(await row.textContent(), /shared \(review\)/);
    const left = Number(await page.getByTestId('review-left').getAttribute('data-count'));
    assert.ok(left >= 1, `items left: ${left}`);
    assert.ok(await page.getByTestId('review-keys').isVisible(), 'the shortcut legend is shown');
    assert.ok((await page.getByTestId('review-changes').textContent()).includes('billing'), 'who changed it');
  });

  it('b. resolved with the keyboard: billing takes the CRM plan, and the item leaves the queue', async () => {
    const page = S.page;
    const row = page.locator('[data-testid=review-field][data-field=requested_plan]');
    // Move the field focus onto requested_plan (the first row), take the CRM side.
    const fields = await page.locator('[data-testid=review-field]').evaluateAll((els) => els.map((e) => e.dataset.field));
    await page.locator('body').click({ position: { x: 5, y: 5 } });
    for (let i = 0; i < fields.length; i++) await page.keyboard.press('ArrowUp');
    for (let i = 0; i < fields.indexOf('requested_plan'); i++) await page.keyboard.press('ArrowDown');
    await page.keyboard.press('c');
    assert.equal(await row.getAttribute('data-choice'), 'crm');
    await page.keyboard.press('Enter'); // no reason yet: nothing happens
    await sleep(300);
    assert.ok((await api('/api/list_reviews')).some((r) => r.id === C.item.id), 'Enter without a reason applies nothing');
    await page.keyboard.press('r');
    await page.keyboard.type('e2e: sales confirmed the plan request');
    await screenshot('review');
    await page.keyboard.press('Enter');
    await page.getByTestId('review-done').waitFor({ state: 'visible' });

    const queue = await api('/api/list_reviews');
    assert.ok(!queue.some((r) => r.id === C.item.id), 'the item left the review queue (API)');
    await waitFor(
      `billing's ${C.sub.id} on ${C.crmPlan} and the contact still asking for it`,
      async () => {
        const st = await billingState();
        const sub = st.subscriptions.find((s) => s.id === C.sub.id);
        const contact = await crmContact(C.crmId);
        return planOf(st, sub) === C.crmPlan && contact.properties.requested_plan === C.crmPlan;
      },
      { timeoutMs: 20_000, intervalMs: 500 },
    );
    const t = await api(`/api/record_timeline?query=${encodeURIComponent(C.item.record)}`);
    // A plan lives on the subscription: the engine's key for that write is `review:{id}:plan`.
    const write = t.entries.find((e) => e.kind === 'write' && e.idempotency_key === `review:${C.item.id}:plan`);
    assert.ok(write, `the resolution was written to billing with its review idempotency key (writes: ${t.entries
      .filter((e) => e.kind === 'write')
      .map((e) => e.idempotency_key)
      .join(', ')})`);
    assert.equal(write.side, 'billing');
    assert.equal(write.state, 'done');
    C.reviewKey = write.idempotency_key;
    // The billing simulator applied exactly one request under that key.
    const [, billingLog] = await simRequests();
    const applied = billingLog.filter((r) => r.idempotency_key === C.reviewKey && r.applied && !r.replayed);
    assert.equal(applied.length, 1, `billing applied the review write once: ${JSON.stringify(applied)}`);
    assert.match(applied[0].path, new RegExp(`/v1/subscriptions/${C.sub.id}$`));
    assert.ok(
      t.entries.some((e) => e.kind === 'operator' && /review_resolved/.test(e.summary) && /sales confirmed/.test(e.detail ?? '')),
      'the reason is in the audit log',
    );
    log(`review ${C.item.id} settled: ${C.sub.id} on ${C.crmPlan}, write ${write.id} (${write.state})`);
  });

  it('c. records: search by email shows events, decisions and writes with the ledger\'s idempotency keys', async () => {
    const page = S.page;
    await page.getByTestId('nav-records').click();
    await page.getByTestId('records-q').fill(C.cus.email);
    await page.getByTestId('records-q').press('Enter');
    await waitFor('the timeline of the record', async () => (await page.getByTestId('records-key').textContent()) === C.item.record);
    assert.equal(new URL(page.url()).hash, `#/records?q=${encodeURIComponent(C.cus.email)}`);
    assert.equal((await page.getByTestId('records-crm-id').textContent()).trim(), C.crmId);
    assert.equal((await page.getByTestId('records-billing-id').textContent()).trim(), C.cus.id);

    const onPage = await page
      .locator('[data-testid=timeline-entry]')
      .evaluateAll((els) => els.map((e) => ({ kind: e.dataset.kind, id: Number(e.dataset.id), key: e.dataset.key })));
    const t = await api(`/api/record_timeline?query=${encodeURIComponent(C.cus.email)}`);
    const ledgerKeys = new Map(t.entries.filter((e) => e.kind === 'write').map((e) => [e.id, e.idempotency_key]));
    const kinds = new Set(onPage.map((e) => e.kind));
    for (const k of ['event', 'decision', 'write']) assert.ok(kinds.has(k), `the page shows ${k}s`);
    const pageWrites = onPage.filter((e) => e.kind === 'write');
    for (const w of pageWrites) assert.equal(w.key, ledgerKeys.get(w.id), `write ${w.id}: page key vs ledger key`);
    assert.ok(pageWrites.some((w) => w.key === C.reviewKey), 'the review write is on the page');
    assert.ok(onPage.length <= t.entries.length && onPage.length > 10, `${onPage.length} entries on the page`);
    await screenshot('records');
  });

  it('d. un-drops a dropped event: the ledger requeues it and audits the reason', async () => {
    const page = S.page;
    const entry = page.locator('[data-testid=timeline-entry][data-kind=event][data-state=echo]').last();
    const id = Number(await entry.getAttribute('data-id'));
    assert.ok(id > 0, 'an echo to un-drop');
    await entry.getByTestId('undrop').click();
    assert.ok(await page.getByTestId('undrop-confirm').isDisabled(), 'a reason is required');
    await page.getByTestId('undrop-reason').fill('e2e: check a suspected missed change');
    await page.getByTestId('undrop-confirm').click();
    await page.getByTestId('records-notice').waitFor({ state: 'visible' });
    assert.match(await page.getByTestId('records-notice').textContent(), new RegExp(`Event ${id} requeued`));

    const t = await api(`/api/record_timeline?query=${encodeURIComponent(C.item.record)}`);
    const audit = t.entries.find((e) => e.kind === 'operator' && /undrop/.test(e.summary) && /suspected missed change/.test(e.detail ?? ''));
    assert.ok(audit, 'the un-drop is audited with its reason');
    assert.equal(JSON.parse(audit.detail).was, 'echo');
    // Requeued: the event is decided again (pending, then a fresh fate).
    const ev = await waitFor(
      `event ${id} decided again`,
      async () => {
        const now = await api(`/api/record_timeline?query=${encodeURIComponent(C.item.record)}`);
        const e = now.entries.find((x) => x.kind === 'event' && x.id === id);
        return e && e.state !== 'pending' ? e : null;
      },
      { timeoutMs: 20_000, intervalMs: 500 },
    );
    log(`event ${id} un-dropped and decided again: ${ev.state} (${ev.summary})`);
    // The page shows the operator's entry.
    await waitFor('the audit entry on the page', async () =>
      (await page.locator(`[data-testid=timeline-entry][data-kind=operator][data-id="${audit.id}"]`).count()) === 1,
    );
  });

  it("e. un-drops a duplicate delivery's original event", async () => {
    const page = S.page;
    const t = await api(`/api/record_timeline?query=${encodeURIComponent(C.item.record)}`);
    const dup = t.entries.find((e) => e.kind === 'duplicate' && e.detail);
    assert.ok(dup, 'the demo delivered a webhook twice for this record');
    const original = JSON.parse(dup.detail).original_inbox_id;
    assert.ok(
      t.entries.some((e) => e.kind === 'event' && e.id === original),
      `the duplicate names an event of this record (${original})`,
    );
    const undrops = (x) => x.entries.filter((e) => e.kind === 'operator' && /undrop/.test(e.summary)).length;
    const before = undrops(t);
    const row = page.locator(`[data-testid=timeline-entry][data-kind=duplicate][data-id="${dup.id}"]`);
    await row.getByTestId('undrop').click();
    await row.getByTestId('undrop-reason').fill('e2e: re-read the first delivery');
    await row.getByTestId('undrop-confirm').click();
    await waitFor('the notice naming the original', async () =>
      new RegExp(`Event ${original} requeued`).test((await page.getByTestId('records-notice').textContent()) ?? ''),
    );
    const now = await api(`/api/record_timeline?query=${encodeURIComponent(C.item.record)}`);
    assert.equal(undrops(now), before + 1, 'one more audited un-drop');
    await waitFor(
      `event ${original} decided again`,
      async () => {
        const x = await api(`/api/record_timeline?query=${encodeURIComponent(C.item.record)}`);
        const e = x.entries.find((y) => y.kind === 'event' && y.id === original);
        return e && e.state !== 'pending';
      },
      { timeoutMs: 20_000, intervalMs: 500 },
    );
  });

  it('ran without script errors or CSP violations', () => {
    assert.deepEqual(S.pageProblems, []);
  });
});
