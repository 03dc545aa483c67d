// Shared by the browser end-to-end tests (`e2e/*.e2e.mjs`, run one file at a time by
// `npm run e2e`): a real `driftless serve --demo` (seeded faults), Debian's headless Chromium
// driven by playwright-core, the JSON API and the simulators' request logs. Each test file is
// its own process with one server and one page (`S`). Every wait is bounded; `closeAll` stops
// the browser and the server, also when a test fails.
//
// Env: DRIFTLESS_BIN (default ../target/debug/driftless), CHROMIUM (default /usr/bin/chromium),
// DRIFTLESS_SCREENSHOTS (where screenshots go; default e2e/out/, git-ignored).

import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { mkdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

export { sleep };

export const UI_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const BIN = process.env.DRIFTLESS_BIN
  ? path.resolve(process.env.DRIFTLESS_BIN)
  : path.resolve(UI_DIR, '../target/debug/driftless');
export const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
/**
 * Where the tests write their screenshots: $DRIFTLESS_SCREENSHOTS, else `e2e/out/` (git-ignored),
 * never the tracked `docs/screenshots/`: `make screenshots` runs the tests and copies them there.
 */
export const SCREENSHOTS = path.resolve(process.env.DRIFTLESS_SCREENSHOTS || path.join(UI_DIR, 'e2e', 'out'));

/** The path for screenshot `name` (its folder made). */
export function screenshotPath(name) {
  mkdirSync(SCREENSHOTS, { recursive: true });
  return path.join(SCREENSHOTS, name);
}
export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];


// ---------------------------------------------------------------------------------------------
// Helpers

export function log(...a) {
  console.log('#', ...a);
}

/** Poll `fn` until it returns a truthy value; throw with `what` after `timeoutMs`. */
export async function waitFor(what, fn, { timeoutMs = 10_000, intervalMs = 250 } = {}) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    await sleep(intervalMs);
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? ` (last error: ${last.message})` : ''}`);
}

/** fetch with a hard timeout. */
export async function get(url, init = {}, timeoutMs = 5000) {
  return fetch(url, { ...init, signal: AbortSignal.timeout(timeoutMs) });
}

export function run(file, args, timeoutMs = 15_000) {
  return new Promise((resolve, reject) => {
    execFile(file, args, { timeout: timeoutMs, env: childEnv(), maxBuffer: 4 << 20 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${path.basename(file)} ${args.join(' ')} failed: ${err.message}\n${stderr}`));
      else resolve(stdout);
    });
  });
}

/** The environment for driftless, without settings that would change what we test. */
export function childEnv() {
  const env = { ...process.env, RUST_LOG: process.env.RUST_LOG ?? 'warn', NO_COLOR: '1' };
  delete env.DRIFTLESS_LEDGER;
  delete env.DRIFTLESS_TOKEN;
  return env;
}

// ---------------------------------------------------------------------------------------------
// The server and the browser, shared by the tests (which run in order).

export const S = {
  proc: null,
  base: '',
  token: '',
  ledger: '',
  startedAt: 0,
  output: [],
  browser: null,
  context: null,
  page: null,
  pageProblems: [],
};

export function startServer(extraArgs = []) {
  return new Promise((resolve, reject) => {
    const args = ['serve', '--demo', '--addr', '127.0.0.1:0', '--faults', 'default', ...extraArgs];
    log(`starting ${BIN} ${args.join(' ')}`);
    const proc = spawn(BIN, args, { env: childEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
    S.proc = proc;
    S.startedAt = Date.now();
    const timer = setTimeout(() => {
      reject(new Error(`driftless did not print its console URL within 60 s. Output:\n${S.output.join('\n')}`));
    }, 60_000);
    proc.on('error', (e) => {
      clearTimeout(timer);
      reject(new Error(`cannot start ${BIN}: ${e.message} (build it: cd .. && cargo build --bin driftless)`));
    });
    proc.on('exit', (code, sig) => {
      clearTimeout(timer);
      reject(new Error(`driftless exited early (${code ?? sig}). Output:\n${S.output.join('\n')}`));
    });
    const keep = (line) => {
      S.output.push(line);
      if (S.output.length > 400) S.output.shift();
    };
    createInterface({ input: proc.stderr }).on('line', keep);
    createInterface({ input: proc.stdout }).on('line', (line) => {
      keep(line);
      const url = line.match(/^\s*console\/API:\s+(http:\/\/127\.0\.0\.1:\d+)\/\?token=([0-9A-Za-z_-]+)\s*$/);
      if (url) [, S.base, S.token] = url;
      const ledger = line.match(/^\s*ledger:\s+(.+?)\s*$/);
      if (ledger) S.ledger = ledger[1];
      if (S.base && S.ledger) {
        clearTimeout(timer);
        resolve();
      }
    });
  });
}

export async function stopServer() {
  const proc = S.proc;
  if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
  const exited = new Promise((r) => proc.once('exit', r));
  const t0 = Date.now();
  proc.kill('SIGTERM');
  const ok = await Promise.race([exited.then(() => true), sleep(15_000).then(() => false)]);
  if (ok) log(`driftless stopped ${Date.now() - t0} ms after SIGTERM`);
  else {
    log('driftless did not stop within 15 s of SIGTERM: killing it');
    proc.kill('SIGKILL');
    await Promise.race([exited, sleep(5000)]);
  }
}

// Never leave the server behind, whatever happens.
process.on('exit', () => {
  if (S.proc && S.proc.exitCode === null && S.proc.signalCode === null) S.proc.kill('SIGKILL');
});

export async function api(p, { method = 'GET', body, token = S.token } = {}) {
  const headers = { Accept: 'application/json' };
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const res = await get(`${S.base}${p}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.text();
  if (!res.ok) throw new Error(`${method} ${p} → ${res.status}: ${text}`);
  return JSON.parse(text);
}

export const status = () => api('/api/status');

let systems = null;
export async function simRequests() {
  systems ??= (await api('/api/overview')).systems;
  const logs = await Promise.all(
    [systems.crm.base_url, systems.billing.base_url].map(async (u) => {
      const res = await get(`${u.replace(/\/+$/, '')}/_sim/requests`);
      assert.equal(res.status, 200, `GET ${u}/_sim/requests`);
      return res.json();
    }),
  );
  return logs;
}

/** Mutating requests the simulators applied (schema calls under /properties/ aside). */
export async function appliedWrites() {
  const [crm, billing] = await simRequests();
  const writes = (l) => l.filter((r) => r.mutating && r.applied && !r.path.includes('/properties/'));
  const w = { crm: writes(crm), billing: writes(billing) };
  return {
    count: w.crm.length + w.billing.length,
    maxSeq: { crm: Math.max(0, ...crm.map((r) => r.seq)), billing: Math.max(0, ...billing.map((r) => r.seq)) },
    w,
  };
}

/** Planned writes held by the write gate (a pause, observe mode), all destinations. */
export const heldTotal = (s) => Object.values(s.held_writes).reduce((a, b) => a + b, 0);

/**
 * Every planned write is held: each destination's open writes all belong to records the write
 * gate parked (a pause, observe mode). A write on its way to a simulator belongs to a record
 * not parked (its worker holds it until the answer is recorded), so while this holds none is
 * on the wire: the positive signal to wait for before asserting that no write went out.
 */
export const everyWriteHeld = (s) =>
  ['crm', 'billing'].every((d) => (s.held_writes[d] ?? 0) === (s.writes[d]?.pending ?? 0));

/** Resolve once the page has painted twice more (a frame that shows the latest update). */
export const painted = (page) =>
  page.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(() => r(true)))));

export function writesAfter(now, seqs) {
  return [...now.w.crm.filter((r) => r.seq > seqs.crm), ...now.w.billing.filter((r) => r.seq > seqs.billing)];
}

export async function ensureResumed() {
  const s = await status();
  for (const p of s.paused) await api('/api/resume_outbound', { method: 'POST', body: { scope: p.scope, reason: null } });
  await waitFor('the pause banner to go', async () => (await S.page.locator('[data-testid=pause-banner]').count()) === 0);
}


/** Start the server (extra `serve` arguments appended) and open the console in Chromium. */
export async function openConsole(extraArgs = []) {
    await startServer(extraArgs);
    log(`console at ${S.base}, ledger ${S.ledger}`);
    S.browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, headless: true, timeout: 60_000 });
    S.context = await S.browser.newContext({ viewport: { width: 1280, height: 800 } });
    S.page = await S.context.newPage();
    S.page.setDefaultTimeout(15_000);
    S.page.on('console', (m) => {
      if (m.type() === 'error') S.pageProblems.push(`console error: ${m.text()}`);
    });
    S.page.on('pageerror', (e) => S.pageProblems.push(`page error: ${e.message}`));
    await S.page.goto(`${S.base}/?token=${S.token}`);
    await S.page.locator('[data-testid=health]').waitFor({ state: 'visible' });
}

/** Close the browser, stop the server and remove the demo's ledger folder. */
export async function closeAll() {
    await S.browser?.close().catch(() => {});
    await stopServer();
    // The demo made its ledger in a temporary folder of its own: remove it.
    const dir = S.ledger ? path.dirname(S.ledger) : '';
    if (dir && path.basename(dir).startsWith('driftless-demo-')) rmSync(dir, { recursive: true, force: true });
}
