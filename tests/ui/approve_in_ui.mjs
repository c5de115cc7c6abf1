#!/usr/bin/env node
// Approve a paused Safe Auto-Updater run in the Prefect UI, in headless Chromium, like a person.
//
//   node tests/ui/approve_in_ui.mjs UI_URL FLOW_RUN_ID APPROVER SCREENSHOT_PREFIX
//        [--reason TEXT] [--reject] [--expect TEXT] [--timeout SECONDS]
//
// UI_URL is the Prefect UI on loopback: http://127.0.0.1:PORT opens the classic (V1) UI,
// http://127.0.0.1:PORT/v2 the new one. The script opens UI_URL/runs/flow-run/FLOW_RUN_ID, waits
// for "Paused", opens the resume form (the "Resume" button in V1; "Open menu" -> "Resume" in V2),
// switches "Approve" on (off with --reject), types the approver and the reason, and takes
// SCREENSHOT_PREFIX-1-form.png. It submits, waits until the run is no longer Paused (and, within
// the time left, for a final state), and takes SCREENSHOT_PREFIX-2-resumed.png.
//
// It prints one JSON line ({"ok": true, "ui": "v1", "state": "Completed", ...}) on success, and
// exits 1 with "approve_in_ui: FAILED: <step>: <why>" on stderr (plus SCREENSHOT_PREFIX-error.png
// when a page was open) on any failure; 2 on bad arguments or a missing playwright-core.
//
// The browser only ever talks to loopback: every other request is aborted (and listed in the
// output as "blocked"; the V2 UI asks an analytics host for its configuration), and the resolver
// answers NOTFOUND for every name. playwright-core (never a browser download) comes from
// $SAFE_UPDATER_UI_NODE (default ${XDG_CACHE_HOME:-~/.cache}/safe-updater-testbed/ui-node, see
// scripts/install-ui-deps); the browser is $CHROMIUM (default /usr/bin/chromium).

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';

const USAGE =
  'usage: approve_in_ui.mjs UI_URL FLOW_RUN_ID APPROVER SCREENSHOT_PREFIX ' +
  '[--reason TEXT] [--reject] [--expect TEXT] [--timeout SECONDS]';

// Chromium must never reach beyond this machine (no sync, updates, translation, safe browsing
// lists, metrics, DNS). Playwright adds its own automation defaults on top of these.
const CHROMIUM_ARGS = [
  '--headless=new',
  '--no-sandbox', // we run as root in CI
  '--disable-dev-shm-usage',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--disable-domain-reliability',
  '--disable-client-side-phishing-detection',
  '--disable-default-apps',
  '--disable-extensions',
  '--no-first-run',
  '--no-default-browser-check',
  '--no-pings',
  '--metrics-recording-only',
  '--disable-breakpad',
  '--disable-features=Translate,MediaRouter,OptimizationHints,AutofillServerCommunication,' +
    'CertificateTransparencyComponentUpdater,InterestFeedContentSuggestions,' +
    'SafeBrowsingEnhancedProtection,DialMediaRouteProvider',
  '--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE localhost , EXCLUDE 127.0.0.1',
];

// The labels Prefect generates from ApprovalInput's fields (a field with a default is "(Optional)").
const APPROVE_LABEL = /^\s*Approve(\s*\(Optional\))?\s*$/;
const APPROVER_LABEL = /^\s*Approver(\s*\(Optional\))?\s*$/;
const REASON_LABEL = /^\s*Reason(\s*\(Optional\))?\s*$/;

class StepError extends Error {}

function fail(code, message) {
  process.stderr.write(`approve_in_ui: FAILED: ${message}\n`);
  process.exit(code);
}

function parseArgs(argv) {
  const positional = [];
  const options = { reason: 'approved in the Prefect UI', reject: false, expect: [], timeout: 90 };
  for (let i = 0; i < argv.length; i += 1) {
    const arg = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) fail(2, `${arg} needs a value\n${USAGE}`);
      i += 1;
      return argv[i];
    };
    if (arg === '--reason') options.reason = value();
    else if (arg === '--reject') options.reject = true;
    else if (arg === '--expect') options.expect.push(value());
    else if (arg === '--timeout') options.timeout = Number(value());
    else if (arg === '-h' || arg === '--help') {
      process.stdout.write(`${USAGE}\n`);
      process.exit(0);
    } else if (arg.startsWith('--')) fail(2, `unknown option ${arg}\n${USAGE}`);
    else positional.push(arg);
  }
  if (positional.length !== 4) fail(2, `expected 4 arguments, got ${positional.length}\n${USAGE}`);
  const [ui, runId, approver, prefix] = positional;
  let url;
  try {
    url = new URL(ui);
  } catch {
    fail(2, `UI_URL ${JSON.stringify(ui)} is not a URL`);
  }
  if (url.protocol !== 'http:' || !isLoopbackHost(url.hostname)) {
    fail(2, `UI_URL must be http:// on loopback (127.0.0.0/8, localhost, [::1]), not ${ui}`);
  }
  if (!/^[0-9a-f-]{36}$/i.test(runId)) fail(2, `FLOW_RUN_ID ${JSON.stringify(runId)} is not a UUID`);
  if (!approver.trim()) fail(2, 'APPROVER is empty');
  if (!(options.timeout > 0)) fail(2, '--timeout must be a positive number of seconds');
  return { ui: ui.replace(/\/+$/, ''), runId, approver, prefix, ...options };
}

function isLoopbackHost(hostname) {
  return hostname === 'localhost' || hostname === '[::1]' || /^127(\.\d{1,3}){3}$/.test(hostname);
}

function isLoopbackUrl(raw) {
  if (raw.startsWith('data:') || raw.startsWith('blob:') || raw === 'about:blank') return true;
  try {
    const url = new URL(raw);
    return ['http:', 'https:', 'ws:', 'wss:'].includes(url.protocol) && isLoopbackHost(url.hostname);
  } catch {
    return false;
  }
}

function loadPlaywright() {
  const cache =
    process.env.SAFE_UPDATER_UI_NODE ||
    path.join(
      process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache'),
      'safe-updater-testbed',
      'ui-node',
    );
  const require = createRequire(path.join(cache, 'noop.js'));
  try {
    return require('playwright-core');
  } catch (error) {
    fail(2, `playwright-core not found under ${cache} (run scripts/install-ui-deps): ${error.message}`);
  }
  return undefined;
}

const args = parseArgs(process.argv.slice(2));
const { chromium } = loadPlaywright();
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
if (!fs.existsSync(executablePath)) fail(2, `no browser at ${executablePath} (apt-get install chromium)`);
fs.mkdirSync(path.dirname(path.resolve(args.prefix)), { recursive: true });

const started = Date.now();
const deadline = started + args.timeout * 1000;
const left = () => Math.max(1000, deadline - Date.now());
const shots = [];
const blocked = new Set();
let step = 'launch chromium';
let stepStarted = Date.now();
const timings = {};

function mark(next) {
  timings[step] = (Date.now() - stepStarted) / 1000;
  step = next;
  stepStarted = Date.now();
}

let browser;
let page;

// Find a form control by the text of its label. The V2 UI links <label for> to the control, so
// getByLabel finds it; the V1 UI's label points at no element, so take the control inside the
// nearest ancestor of the label text that holds one.
async function control(scope, label, role) {
  const byLabel = scope.getByLabel(label);
  if ((await byLabel.count()) === 1) return byLabel;
  const text = scope.getByText(label).first();
  await text.waitFor({ timeout: left() });
  const holder = text.locator(
    'xpath=ancestor::*[.//textarea or .//input[not(@type="hidden")] or .//*[@role="switch"]][1]',
  );
  const found = holder.getByRole(role);
  const count = await found.count();
  if (count !== 1) throw new StepError(`expected one ${role} for the label ${label}, found ${count}`);
  return found;
}

async function shoot(name) {
  const file = `${args.prefix}-${name}.png`;
  await page.screenshot({ path: file, fullPage: false, animations: 'disabled' });
  shots.push(path.resolve(file));
  return file;
}

async function visibleCount(locator) {
  let visible = 0;
  for (const handle of await locator.all()) if (await handle.isVisible()) visible += 1;
  return visible;
}

// The run's state badge, read from the page header (outside any dialog).
const STATES = ['Paused', 'Running', 'Pending', 'Completed', 'Failed', 'Crashed', 'Cancelled', 'Cancelling'];
const FINAL = ['Completed', 'Failed', 'Crashed', 'Cancelled'];
async function currentState() {
  for (const name of STATES) {
    if ((await visibleCount(page.getByText(name, { exact: true }))) > 0) return name;
  }
  return null;
}

async function waitForState(accept, label, { reloadEveryMs = 8000 } = {}) {
  let lastReload = Date.now();
  for (;;) {
    const state = await currentState();
    if (state && accept(state)) return state;
    if (Date.now() >= deadline) {
      const shown = (await page.locator('body').innerText().catch(() => '')).replace(/\s+/g, ' ');
      throw new StepError(
        `the run page never showed ${label} (last state seen: ${state ?? 'none'}); ` +
          `the page shows: ${JSON.stringify(shown.slice(0, 300))}`,
      );
    }
    if (Date.now() - lastReload > reloadEveryMs) {
      // Both UIs poll the run; a reload covers a poll that stalled.
      await page.reload({ timeout: left() });
      lastReload = Date.now();
    }
    await page.waitForTimeout(500);
  }
}

async function main() {
  browser = await chromium.launch({
    executablePath,
    headless: true,
    args: CHROMIUM_ARGS,
    timeout: 60000,
  });
  const context = await browser.newContext({
    viewport: { width: 1280, height: 900 },
    deviceScaleFactor: 1,
    locale: 'en-US',
    timezoneId: 'UTC',
    serviceWorkers: 'block',
  });
  context.setDefaultTimeout(30000);
  await context.route('**/*', (route) => {
    const url = route.request().url();
    if (isLoopbackUrl(url)) return route.continue();
    blocked.add(new URL(url).origin);
    return route.abort('blockedbyclient');
  });
  page = await context.newPage();

  mark('open the run page');
  const runUrl = `${args.ui}/runs/flow-run/${args.runId}`;
  // Loading the page may use 30 s even past the deadline: a busy machine is slow, not broken.
  const response = await page.goto(runUrl, {
    timeout: Math.max(left(), 30000),
    waitUntil: 'domcontentloaded',
  });
  if (!response || !response.ok()) {
    throw new StepError(`GET ${runUrl} answered ${response ? response.status() : 'nothing'}`);
  }
  const ui = new URL(page.url()).pathname.startsWith('/v2') ? 'v2' : 'v1';

  mark('wait for the run to show Paused');
  await waitForState((state) => state === 'Paused', '"Paused"', { reloadEveryMs: 15000 });

  mark('open the resume form');
  // V1: a "Resume" button in the header. V2: the header's "Open menu" -> "Resume".
  const resumeButton = page.getByRole('button', { name: 'Resume', exact: true });
  const menuButton = page.getByRole('button', { name: 'Open menu', exact: true });
  await resumeButton.or(menuButton).first().waitFor({ timeout: left() });
  if ((await visibleCount(resumeButton)) > 0) {
    await resumeButton.first().click();
  } else {
    await menuButton.first().click();
    await page.getByRole('menuitem', { name: 'Resume', exact: true }).click();
  }
  const dialog = page.getByRole('dialog').filter({ hasText: 'Resume Flow Run' });
  await dialog.waitFor({ state: 'visible', timeout: left() });

  mark('check the form');
  // V2 opens the dialog first and renders the run's form into it when the schema has loaded.
  await dialog.getByText(APPROVER_LABEL).first().waitFor({ timeout: left() });
  const formShown = Date.now() + Math.min(left(), 10000);
  for (;;) {
    const text = await dialog.innerText();
    const missing = args.expect.filter((expected) => !text.includes(expected));
    if (!missing.length) break;
    if (Date.now() >= formShown) {
      throw new StepError(`the form does not show ${JSON.stringify(missing[0])}; it shows:\n${text}`);
    }
    await page.waitForTimeout(250);
  }

  mark('fill the form');
  const approve = await control(dialog, APPROVE_LABEL, 'switch');
  const want = args.reject ? 'false' : 'true';
  if ((await approve.getAttribute('aria-checked')) !== want) await approve.click();
  if ((await approve.getAttribute('aria-checked')) !== want) {
    throw new StepError(`the "Approve" switch did not turn ${args.reject ? 'off' : 'on'}`);
  }
  const approver = await control(dialog, APPROVER_LABEL, 'textbox');
  await approver.fill(args.approver);
  const reason = await control(dialog, REASON_LABEL, 'textbox');
  await reason.fill(args.reason);
  if ((await approver.inputValue()) !== args.approver || (await reason.inputValue()) !== args.reason) {
    throw new StepError('the approver or reason field did not keep the typed text');
  }
  await page.mouse.move(0, 0); // no hover highlight in the picture
  await shoot('1-form');

  mark('submit the form');
  await dialog.getByRole('button', { name: /^(Submit|Resume)$/ }).click();
  try {
    await dialog.waitFor({ state: 'hidden', timeout: Math.min(left(), 15000) });
  } catch {
    const still = (await dialog.count()) ? await dialog.innerText() : '';
    throw new StepError(`the form stayed open after submit (refused input?):\n${still}`);
  }

  mark('wait for the run to leave Paused');
  let state = await waitForState((s) => s !== 'Paused', 'a state other than "Paused"');
  mark('wait for a final state');
  if (!FINAL.includes(state)) {
    try {
      state = await waitForState((s) => FINAL.includes(s), 'a final state');
    } catch (error) {
      if (!(error instanceof StepError)) throw error;
      // Left Paused is what we had to prove; a slow finish is the caller's to judge.
    }
  }
  await page.mouse.move(0, 0);
  await shoot('2-resumed');
  mark('done');
  return {
    ok: true,
    ui,
    state,
    url: runUrl,
    screenshots: shots,
    blocked: [...blocked],
    timings,
    seconds: (Date.now() - started) / 1000,
  };
}

let exitCode = 0;
try {
  const summary = await main();
  process.stdout.write(`${JSON.stringify(summary)}\n`);
} catch (error) {
  exitCode = 1;
  if (page) {
    try {
      await shoot('error');
    } catch {
      // the page may be gone; the message below is what matters
    }
  }
  const why = error instanceof StepError ? error.message : `${error.name}: ${error.message}`;
  process.stderr.write(`approve_in_ui: FAILED: ${step}: ${why}\n`);
  if (shots.length) process.stderr.write(`approve_in_ui: screenshots: ${shots.join(' ')}\n`);
} finally {
  if (browser) {
    try {
      await browser.close();
    } catch {
      // already gone
    }
  }
}
process.exit(exitCode);
