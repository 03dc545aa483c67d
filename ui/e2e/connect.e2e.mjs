// Browser end-to-end test of the Connect screen against a real `driftless serve --demo`
// (seeded faults): a wrong key gets the specific reason and a right one connects (the demo's
// simulators take `pat-sim` / `sk_test_sim`); the CRM properties preview reads the simulator and
// creates nothing (the demo made them at start); saving the key starts observe mode (the contract
// step does not apply to the embedded contract); held writes grow while the simulators get no
// writes; "Turn writes on" previews, then the confirm sends them; "Back to observe" holds again.
// The key is never echoed: not on the page after saving, not in the server output or the ledger.
//
// Screenshot: connect.png in the screenshots folder (harness.mjs).

import assert from 'node:assert/strict';
import { readFileSync, statSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';

import {
  appliedWrites,
  closeAll,
  everyWriteHeld,
  heldTotal,
  log,
  openConsole,
  S,
  screenshotPath,
  simRequests,
  status,
  waitFor,
  writesAfter,
} from './harness.mjs';

// Keys saved by this test go under their own keychain service (never the user's `driftless`).
process.env.DRIFTLESS_KEYCHAIN_SERVICE = `driftless-e2e-${process.pid}`;

const CRM_KEY = 'pat-sim';
const BILLING_KEY = 'sk_test_sim';

const tid = (id) => S.page.getByTestId(id);
const text = async (id) => ((await tid(id).textContent()) ?? '').replace(/\s+/g, ' ').trim();

/** Click the test button until the result has the wanted code (the demo's faults may answer 429/500 first). */
async function testUntil(okWanted, codeWanted) {
  for (let i = 0; i < 8; i++) {
    const before = await tid('connect-test-result').count() ? await text('connect-test-result') : null;
    await tid('connect-test').click();
    await waitFor('a test result', async () => (await tid('connect-test-result').count()) > 0 && (await tid('connect-test').isEnabled()));
    const ok = (await tid('connect-test-result').getAttribute('data-ok')) === 'true';
    const code = await tid('connect-test-result').getAttribute('data-code');
    if (ok === okWanted && (codeWanted === null || code === codeWanted)) return text('connect-test-result');
    // The button is enabled again (waited for above): the next click is a new test.
    log(`test answered ok=${ok} code=${code} (was: ${before}); the demo's faults, trying again`);
  }
  throw new Error(`the connection test never answered ok=${okWanted} code=${codeWanted}`);
}

/** Click a button until the screen shows `readyId` without an error (faults may fail a first try). */
async function clickUntil(buttonId, readyId) {
  for (let i = 0; i < 8; i++) {
    await tid(buttonId).click();
    await waitFor(`${readyId} or an error`, async () => (await tid(readyId).count()) > 0 || (await tid('connect-error').count()) > 0);
    if ((await tid('connect-error').count()) === 0) return;
    log(`${buttonId}: ${await text('connect-error')}; trying again`);
    await waitFor(`${buttonId} enabled again`, async () => tid(buttonId).isEnabled());
  }
  throw new Error(`${buttonId} kept failing`);
}

describe('Connect screen in Chromium', { concurrency: 1 }, () => {
  before(async () => {
    await openConsole();
    await S.page.goto(`${S.base}/#/connect`);
    await tid('screen-connect').waitFor({ state: 'visible' });
  });

  after(async () => {
    await closeAll();
  });

  it('a. tests keys: a wrong one gets the specific reason, the right one connects, read-only', async () => {
    const [crm0] = await simRequests();
    const seq0 = Math.max(0, ...crm0.map((r) => r.seq));
    const input = tid('connect-key');
    assert.equal(await input.getAttribute('type'), 'password');
    await input.fill('pat-wrong-token');
    const wrong = await testUntil(false, 'key_refused');
    assert.match(wrong, /^Not connected: crm: the key was refused \(401 from http:\/\/127\.0\.0\.1:\d+\/crm\/v3\/objects\/contacts\?limit=1\)/);
    await input.fill(CRM_KEY);
    const right = await testUntil(true, null);
    assert.match(right, /^Connected: HubSpot CRM key reads the account/);
    // The simulator saw the reads with the wrong key refused, and no write from the tests.
    const [crm1] = await simRequests();
    const mine = crm1.filter((r) => r.seq > seq0 && r.path.startsWith('/crm/v3/objects/contacts') && r.method === 'GET');
    assert.ok(mine.some((r) => r.status === 401), 'the simulator refused the wrong key');
    assert.ok(mine.some((r) => r.status === 200), 'the simulator answered the right key');

    // Billing: chosen in the address; the key field is cleared when the system changes.
    await tid('connect-system-billing').check();
    await waitFor('the system in the address', async () => /[?&]system=billing/.test(new URL(S.page.url()).hash));
    assert.equal(await input.inputValue(), '');
    assert.equal(await tid('connect-preview').count(), 0, 'no properties for billing');
    await input.fill('sk_test_wrong');
    assert.match(await testUntil(false, 'key_refused'), /billing: the key was refused \(401/);
    await input.fill(BILLING_KEY);
    assert.match(await testUntil(true, null), /Stripe key reads the account/);
  });

  it('b. previews the CRM properties: all exist in the demo, nothing is created', async () => {
    await tid('connect-system-crm').check();
    await tid('connect-key').fill(CRM_KEY);
    const [crm0] = await simRequests();
    const seq0 = Math.max(0, ...crm0.map((r) => r.seq));
    await clickUntil('connect-preview', 'connect-properties');
    const rows = tid('connect-property');
    const n = await rows.count();
    assert.ok(n >= 3, `${n} properties listed`);
    for (let i = 0; i < n; i++) assert.equal(await rows.nth(i).getAttribute('data-exists'), 'true');
    assert.match(await text('connect-properties'), new RegExp(`${n} needed: ${n} exist, 0 would be created`));
    assert.equal(await tid('connect-create').count(), 0, 'nothing to create');
    const [crm1] = await simRequests();
    const reads = crm1.filter((r) => r.seq > seq0 && r.path.startsWith('/crm/v3/properties/'));
    assert.ok(reads.length >= n, `${reads.length} property reads`);
    assert.ok(reads.every((r) => r.method === 'GET'), 'the preview only reads');
  });

  it('c. saves the key: the field is cleared, the contract step does not apply, the ledger observes', async () => {
    await clickUntil('connect-save', 'connect-saved');
    assert.equal(await tid('connect-key').inputValue(), '', 'the key field is cleared');
    const steps = await tid('connect-step').evaluateAll((els) => els.map((e) => e.getAttribute('data-step')));
    assert.deepEqual(steps, ['test', 'store', 'contract', 'observe']);
    assert.match(await text('connect-saved'), /contract: does not apply: the engine runs on the embedded demo contract/);
    const body = await S.page.locator('body').textContent();
    assert.ok(!body.includes(CRM_KEY), 'the key is shown on the page');
    const s = await status();
    assert.equal(s.observe?.set_by, 'operator:console', JSON.stringify(s.observe));
    await waitFor('the observe panel', async () => (await tid('connect-observe').getAttribute('data-observe')) === 'true');
  });

  it('d. observing holds writes; writes on previews, then sends them; back to observe holds again', async () => {
    // Writes claimed before observe mode may still finish: the baseline is taken once every
    // planned write is held (none can be on its way); from then nothing may reach the simulators.
    const first = await waitFor('every planned write held by observe mode', async () => {
      const x = await status();
      return everyWriteHeld(x) ? x : null;
    }, { timeoutMs: 60_000 });
    const base = await appliedWrites();
    // Held writes grow: new events planned into writes, every one of them held.
    const s = await waitFor('more held writes, every planned write held', async () => {
      const x = await status();
      return heldTotal(x) > heldTotal(first) && everyWriteHeld(x) ? x : null;
    }, { timeoutMs: 60_000 });
    await waitFor('the page to show held writes', async () => {
      const shown = await Promise.all(['crm', 'billing'].map(async (d) => Number(await text(`connect-held-${d}`))));
      return shown[0] + shown[1] > 0;
    });
    const during = await appliedWrites();
    assert.deepEqual(writesAfter(during, base.maxSeq), [], 'a write reached a simulator while observing');
    log(`held writes ${JSON.stringify(s.held_writes)}`);
    const SHOT = screenshotPath('connect.png');
    await S.page.screenshot({ path: SHOT, fullPage: true });
    assert.ok(statSync(SHOT).size > 15_000, 'the screenshot looks empty');

    await tid('connect-writes-on').click();
    await tid('connect-writes-preview').waitFor({ state: 'visible' });
    const preview = await text('connect-writes-preview');
    const m = preview.match(/^(\d+) held writes will be sent: billing (\d+), crm (\d+)\./);
    assert.ok(m, preview);
    assert.equal(Number(m[1]), Number(m[2]) + Number(m[3]));
    assert.ok(Number(m[1]) > 0);
    assert.ok((await status()).observe, 'the preview turned writes on');
    await tid('connect-writes-confirm').click();
    await tid('connect-writes-result').waitFor({ state: 'visible' });
    assert.match(await text('connect-writes-result'), /^Writes are on: \d+ held writes are being sent\./);
    assert.equal((await status()).observe, null);
    await waitFor('the held writes at the simulators', async () => writesAfter(await appliedWrites(), during.maxSeq).length > 0, {
      timeoutMs: 30_000,
      intervalMs: 500,
    });

    await tid('connect-writes-off').click();
    await waitFor('observe mode again', async () => (await status()).observe?.set_by === 'operator:console');
    await waitFor('the page to show it', async () => (await tid('connect-observe').getAttribute('data-observe')) === 'true');
  });

  it('e. the keys are not in the server output or the ledger', async () => {
    const out = S.output.join('\n');
    const ledger = Buffer.concat(['', '-wal'].map((x) => {
      try {
        return readFileSync(`${S.ledger}${x}`);
      } catch {
        return Buffer.alloc(0);
      }
    }));
    assert.ok(ledger.length > 0, 'the ledger was read');
    assert.ok(ledger.includes(Buffer.from('operator:console')), 'the search finds what the ledger holds');
    for (const k of [CRM_KEY, BILLING_KEY, 'pat-wrong-token', 'sk_test_wrong']) {
      assert.ok(!out.includes(k), `${k} in the server output`);
      assert.ok(!ledger.includes(Buffer.from(k)), `${k} in the ledger`);
    }
  });
});
