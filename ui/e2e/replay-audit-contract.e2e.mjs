// Browser end-to-end test of the Replay, Audit log and Contract screens against a real
// `driftless serve --demo --faults default` (see ./harness.mjs). Each click is checked against
// what the engine's API (the ledger) and the simulators' request logs show afterwards.
//
//   DRIFTLESS_BIN=$CARGO_TARGET_DIR/debug/driftless node --test --test-reporter=spec e2e/replay-audit-contract.e2e.mjs
//
// Screenshots: replay.png, audit.png, contract.png in the screenshots folder (harness.mjs).

import assert from 'node:assert/strict';
import { readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';

import { api, BIN, closeAll, ensureResumed, get, log, openConsole, run, S, screenshotPath, simRequests, sleep, status, UI_DIR, waitFor } from './harness.mjs';


async function shot(name) {
  const file = screenshotPath(`${name}.png`);
  await sleep(300);
  await S.page.screenshot({ path: file, fullPage: false });
  assert.ok(statSync(file).size > 15_000, `${file} looks empty`);
  log(`screenshot: ${file}`);
}

async function open(hash) {
  await S.page.goto(`${S.base}/${hash}`);
}

const text = async (id) => ((await S.page.getByTestId(id).textContent()) ?? '').trim();

const COUNT_KINDS = { create: 'creates', update: 'updates', noop: 'noops', conflict: 'conflicts' };

async function pageCounts() {
  const out = {};
  for (const [kind, field] of Object.entries(COUNT_KINDS)) out[field] = Number(await text(`replay-count-${kind}`));
  return out;
}

const pick = (p) => Object.fromEntries(Object.values(COUNT_KINDS).map((f) => [f, p[f]]));

/** Preview on the page, then the API's dry run: equal counts (a few tries: the demo keeps editing records). */
async function previewMatchesApi(record) {
  let last = '';
  for (let i = 0; i < 6; i++) {
    if (i > 0) await S.page.getByTestId('replay-preview').click();
    await S.page.getByTestId('replay-preview-result').waitFor({ state: 'visible' });
    await waitFor('the preview to settle', async () => S.page.getByTestId('replay-preview').isEnabled());
    const shown = await pageCounts();
    const dry = await api('/api/replay', { method: 'POST', body: { selector: { record, dead_letter_ids: [] }, dry_run: true } });
    if (JSON.stringify(shown) === JSON.stringify(pick(dry))) return dry;
    last = `page ${JSON.stringify(shown)} vs API ${JSON.stringify(pick(dry))}`;
  }
  assert.fail(`the preview never matched the API's dry run: ${last}`);
}

/** The record's write entries (outbox ids) from its timeline. */
async function writes(record) {
  const t = await api(`/api/record_timeline?query=${encodeURIComponent(record)}`);
  return t.entries.filter((e) => e.kind === 'write');
}

/** Wait until the run is done on the page and in the API; returns the API's run. */
async function runDone(runId) {
  const r = await waitFor(
    `replay run ${runId} to be done`,
    async () => {
      const x = await api(`/api/replay_run?id=${runId}`);
      return x.state === 'done' ? x : null;
    },
    { timeoutMs: 60_000, intervalMs: 500 },
  );
  await waitFor('the page to show the run done', async () => (await S.page.getByTestId('replay-run-status').getAttribute('data-state')) === 'done', {
    timeoutMs: 10_000,
  });
  assert.equal(r.pending, 0);
  assert.equal(r.done, r.records);
  assert.match(await text('replay-progress'), new RegExp(`^${r.done} of ${r.records} record`));
  return r;
}

/** Every new write of the record reached a simulator (by correlation id); returns how many. */
async function newWritesReachedSims(record, before) {
  const seen = new Set(before.map((w) => w.id));
  const fresh = (await writes(record)).filter((w) => !seen.has(w.id));
  if (fresh.length === 0) return 0;
  const [crm, billing] = await simRequests();
  const all = [...crm, ...billing];
  for (const w of fresh) {
    await waitFor(`write ${w.id} (${w.idempotency_key}) at a simulator`, async () => {
      const [c2, b2] = await simRequests();
      return [...c2, ...b2].some((r) => r.mutating && r.correlation_id && r.correlation_id === w.correlation_id && r.status < 300);
    });
  }
  log(`${fresh.length} new write(s) for ${record}; ${all.length} simulator requests logged`);
  return fresh.length;
}

/** A record the engine has decided on (an `engine` audit row with a record), quiet for a while. */
async function someRecord() {
  const l = await api('/api/list_audit', { method: 'POST', body: { actor: 'engine', limit: 500 } });
  const keys = [...new Set(l.items.map((r) => r.record).filter((k) => k && /^customer:crm:/.test(k)))];
  assert.ok(keys.length > 0, 'the demo made no decisions yet');
  // The oldest ones: the least likely to be mid-change.
  return keys[keys.length - 1];
}

function csvIds(csv) {
  return csv
    .trim()
    .split('\n')
    .slice(1)
    .map((line) => Number(line.split(',')[0]));
}

describe('Replay, Audit log and Contract screens in Chromium', { concurrency: 1 }, () => {
  let record = '';

  before(async () => {
    // One worker: a replay of many records stays queued long enough for a cancel to land.
    await openConsole(['--workers', '1']);
    await waitFor('the demo to make decisions', async () => (await api('/api/list_audit', { method: 'POST', body: { actor: 'engine', limit: 1 } })).total > 20, {
      timeoutMs: 60_000,
      intervalMs: 1000,
    });
    // Prefer a record whose replay would write (the demo's drift), else a quiet one.
    const dry = await api('/api/replay', { method: 'POST', body: { selector: { from_ms: S.startedAt - 120_000, dead_letter_ids: [] }, dry_run: true } });
    const writing = dry.samples.find((x) => (x.kind === 'update' || x.kind === 'create') && !x.key_used_by);
    record = writing?.record ?? (await someRecord());
    log(`replaying ${record}${writing ? ` (its replay would ${writing.kind} ${writing.destination})` : ''}`);
  });

  after(async () => {
    await closeAll();
  });

  it('a. replays a record: the preview matches the dry run, the run reaches done, the writes reach the simulators, the audit shows it', async () => {
    await ensureResumed();
    const prevRun = await api('/api/replay_run');
    await open(`#/replay?record=${encodeURIComponent(record)}`);
    await S.page.getByTestId('screen-replay').waitFor({ state: 'visible' });
    assert.equal(await S.page.getByTestId('replay-record').inputValue(), record, 'the record comes from the address');
    const dry = await previewMatchesApi(record);
    log(`preview: ${JSON.stringify(pick(dry))}, ${dry.keys_already_used} keys already used`);
    const before = await writes(record);

    await S.page.getByTestId('replay-run').click();
    await S.page.getByTestId('replay-run-status').waitFor({ state: 'visible' });
    await waitFor('the run in the address', async () => /[?&]run=\d+/.test(new URL(S.page.url()).hash));
    const runId = Number(new URL(S.page.url()).hash.match(/[?&]run=(\d+)/)[1]);
    assert.ok(!prevRun || runId > prevRun.id, 'a new replay run');
    const r = await runDone(runId);
    assert.equal(r.records, 1);
    assert.equal(r.started_by, 'operator:console');

    const expected = dry.creates + dry.updates - dry.keys_already_used;
    const made = await newWritesReachedSims(record, before);
    if (expected > 0) assert.ok(made > 0, `the preview planned ${expected} write(s) but none was made`);
    else log(`the preview planned no write (in sync); ${made} write(s) live events made meanwhile reached the simulators`);

    // The ledger's audit log has the replay, and so does the Audit screen.
    const audit = await api('/api/list_audit', { method: 'POST', body: { action: 'replay', record } });
    const row = audit.items.find((x) => JSON.parse(x.detail).run === runId);
    assert.ok(row, `no audit row for replay run ${runId}`);
    assert.equal(row.actor, 'operator:console');
    await S.page.getByTestId('nav-audit').click();
    await S.page.getByTestId('screen-audit').waitFor({ state: 'visible' });
    await S.page.getByTestId('audit-action').fill('replay');
    await S.page.getByTestId('audit-record').fill(record);
    await S.page.getByTestId('audit-apply').click();
    await S.page.locator(`[data-testid=audit-row][data-id="${row.id}"]`).waitFor({ state: 'visible' });
    await S.page.goto(`${S.base}/#/replay?record=${encodeURIComponent(record)}&run=${runId}`);
    await S.page.getByTestId('replay-preview-result').waitFor({ state: 'visible' });
    await S.page.getByTestId('replay-run-status').waitFor({ state: 'visible' });
    await shot('replay');
  });

  it('b. while paused no run is offered, only "Resume, then replay", which resumes and runs', async () => {
    await api('/api/pause_outbound', { method: 'POST', body: { scope: 'global', reason: 'e2e: replay while paused' } });
    try {
      const prevRun = await api('/api/replay_run');
      await open(`#/replay?record=${encodeURIComponent(record)}`);
      await S.page.getByTestId('pause-banner').waitFor({ state: 'visible' });
      await S.page.getByTestId('replay-preview-result').waitFor({ state: 'visible' });
      // The console knows writes are paused: instead of a run the engine would refuse (409
      // `paused`, covered by the screen's unit test), it offers the step that works.
      assert.equal(await S.page.getByTestId('replay-run').count(), 0, 'no run button while paused');
      assert.match(await S.page.locator('[data-testid=replay-preview-result] .actions').textContent(), /Outbound writes are paused/);
      assert.equal((await api('/api/replay_run'))?.id, prevRun?.id, 'nothing queued while paused');
      assert.ok((await status()).paused.some((p) => p.scope === 'global'), 'still paused');

      await S.page.getByTestId('replay-resume-run').click();
      await waitFor('the pause to be lifted', async () => (await status()).paused.length === 0);
      await waitFor('a new replay run', async () => ((await api('/api/replay_run'))?.id ?? 0) > (prevRun?.id ?? 0));
      const r = await api('/api/replay_run');
      await runDone(r.id);
      assert.equal(await S.page.getByTestId('replay-paused').count(), 0, 'the refusal is gone');
      const resumed = await api('/api/list_audit', { method: 'POST', body: { action: 'resume_outbound', limit: 1 } });
      assert.equal(resumed.items[0]?.actor, 'operator:console');
    } finally {
      await ensureResumed();
    }
  });

  it('c. audit filters live in the address; the list and the CSV export match the API', async () => {
    await open('#/audit');
    await S.page.getByTestId('screen-audit').waitFor({ state: 'visible' });
    await S.page.getByTestId('audit-actor').fill('operator:');
    await S.page.getByTestId('audit-action').fill('replay');
    await S.page.getByTestId('audit-apply').click();
    await waitFor('the filters in the address', async () => new URL(S.page.url()).hash === '#/audit?actor=operator%3A&action=replay');
    const filter = { actor: 'operator:', action: 'replay' };
    const l = await api('/api/list_audit', { method: 'POST', body: { ...filter, limit: 1000 } });
    assert.ok(l.total >= 2, `two replays were made, the API lists ${l.total}`);
    await waitFor('the page total to match the API', async () => (await S.page.getByTestId('audit-total').getAttribute('data-total')) === String(l.total));
    const ids = await S.page.locator('[data-testid=audit-row]').evaluateAll((els) => els.map((e) => Number(e.getAttribute('data-id'))));
    assert.deepEqual(ids, l.items.slice(0, 50).map((x) => x.id));

    // A reload keeps the filters (they live in the address).
    await S.page.reload();
    await S.page.getByTestId('screen-audit').waitFor({ state: 'visible' });
    assert.equal(await S.page.getByTestId('audit-actor').inputValue(), 'operator:');
    assert.equal(await S.page.getByTestId('audit-action').inputValue(), 'replay');

    const [download] = await Promise.all([S.page.waitForEvent('download'), S.page.getByTestId('audit-export').click()]);
    const file = await download.path();
    const csv = readFileSync(file, 'utf8');
    assert.equal(download.suggestedFilename(), 'driftless-audit.csv');
    assert.deepEqual(csvIds(csv), l.items.map((x) => x.id), 'the CSV holds exactly the filtered rows');
    const res = await get(`${S.base}/api/audit_csv?actor=operator%3A&action=replay`, { headers: { Authorization: `Bearer ${S.token}` } });
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /^text\/csv/);
    assert.equal(await res.text(), csv, 'the page exported what /api/audit_csv streams');
    // The unfiltered export streams every row, across pages (500 per page).
    const everything = await get(`${S.base}/api/audit_csv`, { headers: { Authorization: `Bearer ${S.token}` } }, 20_000);
    const allIds = csvIds(await everything.text());
    const total = (await api('/api/list_audit', { method: 'POST', body: { limit: 1 } })).total;
    assert.ok(allIds.length > 0 && allIds.length <= total, `${allIds.length} CSV rows, ${total} in the log`);
    assert.ok(allIds.every((id, i) => i === 0 || id < allIds[i - 1]), 'newest first, no repeats');
    log(`audit: ${l.total} operator replay rows; full export ${allIds.length} rows`);
    await open('#/audit');
    await S.page.locator('[data-testid=audit-row]').first().waitFor({ state: 'visible' });
    await shot('audit');
  });

  it('d. the contract screen shows the version /api/status reports and every mapped field', async () => {
    await open('#/contract');
    await S.page.getByTestId('screen-contract').waitFor({ state: 'visible' });
    const s = await status();
    assert.equal(await text('contract-version'), s.contract_version);
    assert.match(await text('contract-source'), /embedded default contract/);
    // The shipped default file is what the demo embeds: its ownership matrix, as the CLI prints it.
    const matrix = await run(BIN, ['contract', 'check', path.resolve(UI_DIR, '../contracts/default.toml')]);
    const want = matrix
      .split('\n')
      .slice(3)
      .map((line) => line.split('|').map((c) => c.trim()))
      .filter((cols) => cols.length >= 5)
      .map((cols) => `${cols[0].split(' ')[0]}.${cols[1]}:${cols[2]}:${cols[3]}:${cols[4].split(' ')[0]}`);
    assert.ok(want.length > 0, `no rows parsed from:\n${matrix}`);
    const shown = await S.page.locator('[data-testid=contract-field]').evaluateAll((rows) =>
      rows.map((r) => {
        const cells = [...r.querySelectorAll('th, td')].map((c) => c.textContent.trim());
        return `${r.getAttribute('data-object')}.${cells[0]}:${cells[1]}:${cells[2]}:${cells[3]}`;
      }),
    );
    assert.deepEqual(shown.sort(), want.sort());
    log(`contract ${s.contract_version}: ${shown.length} mapped fields`);
    await shot('contract');
  });

  it('e. a time-range replay run can be cancelled: the engine drops only records not started, the page and the audit agree', async () => {
    await ensureResumed();
    await open('#/replay');
    await S.page.getByTestId('screen-replay').waitFor({ state: 'visible' });
    // Every event so far (the demo started a minute or two ago), in the input's local time.
    const from = await S.page.evaluate((ms) => {
      const d = new Date(ms);
      const p = (n) => `${n}`.padStart(2, '0');
      return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}`;
    }, S.startedAt - 120_000);
    await S.page.getByTestId('replay-from').fill(from);
    await S.page.getByTestId('replay-preview').click();
    await S.page.getByTestId('replay-preview-result').waitFor({ state: 'visible', timeout: 90_000 });
    assert.match(new URL(S.page.url()).hash, /[?&]from=/, 'the time range is in the address');
    const records = Number((await text('replay-preview-result')).match(/Preview: (\d+) record/)?.[1] ?? 0);
    assert.ok(records > 1, `the time range selects records (${records})`);
    await S.page.getByTestId('replay-run').click({ timeout: 90_000 });
    await S.page.getByTestId('replay-run-status').waitFor({ state: 'visible', timeout: 90_000 });
    const runId = Number(new URL(S.page.url()).hash.match(/[?&]run=(\d+)/)[1]);
    const cancel = S.page.getByTestId('replay-cancel');
    if (await cancel.count()) await cancel.click().catch(() => {});
    const r = await waitFor(
      `replay run ${runId} to end`,
      async () => {
        const x = await api(`/api/replay_run?id=${runId}`);
        return x.state !== 'running' || x.pending === 0 ? x : null;
      },
      { timeoutMs: 60_000, intervalMs: 500 },
    );
    assert.equal(r.records, records, 'the run holds the previewed records');
    assert.equal(r.done + r.pending + r.cancelled, r.records, JSON.stringify(r));
    if (r.state === 'cancelled') {
      const a = await api('/api/list_audit', { method: 'POST', body: { action: 'replay_cancel', limit: 1 } });
      const detail = JSON.parse(a.items[0].detail);
      assert.deepEqual([detail.run, detail.dropped], [runId, r.cancelled], 'the audit row names the run and what it dropped');
      await waitFor('the page to show the cancel', async () => (await S.page.getByTestId('replay-run-status').getAttribute('data-state')) === 'cancelled');
      // Records a worker had started, or whose replay joined live work, finish on their own.
      await waitFor('the records not dropped to finish', async () => (await api(`/api/replay_run?id=${runId}`)).pending === 0, {
        timeoutMs: 60_000,
        intervalMs: 500,
      });
      log(`run ${runId}: ${r.records} records, ${r.cancelled} dropped by the cancel, ${r.joined} joined live work`);
    } else {
      log(`run ${runId}: all ${r.records} records were done before the cancel landed`);
    }
  });

  it('ran without script errors or CSP violations', () => {
    assert.deepEqual(S.pageProblems, []);
  });
});
