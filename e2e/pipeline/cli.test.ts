import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { freePort, serviceHost } from '../harness/net.ts';
import { backbeat, backbeatWithEnv } from './backbeat.ts';

// The `backbeat` command as a user meets it (a real process): help for every verb, one-line errors, the
// documented exit codes, settings from the environment. Answers of a real status API are in the
// suites of each verb (operations, pause, failed-set, status-api).

type Failure = Error & { code?: number; stderr?: string; stdout?: string };

const VERBS = ['run', 'validate', 'status', 'failed', 'failed list', 'failed retry', 'pause', 'resume', 'backfill', 'worker', 'operator'];

/** The exit code, stdout and stderr of a command (no BACKBEAT_* or KUBECONFIG of the runner's own). */
async function outcome(args: string[], env: Record<string, string> = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('BACKBEAT_') && k !== 'KUBECONFIG'));
  try {
    return { code: 0, stdout: await backbeatWithEnv({ ...clean, ...env }, ...args), stderr: '' };
  } catch (err) {
    const e = err as Failure;
    return { code: e.code ?? -1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
  }
}

describe('backbeat CLI (real process)', function () {
  this.timeout(60_000);

  it('gives every verb its own help, every option described, every worker and operator setting its variable', async () => {
    for (const verb of VERBS) {
      const { code, stdout } = await outcome([...verb.split(' '), '--help']);
      assert.equal(code, 0, verb);
      assert.match(stdout, new RegExp(`^Usage: backbeat ${verb} `), verb);
      // An option line: flags, then its description on the same line.
      for (const line of stdout.split('\n').filter((l) => /^\s+-/.test(l))) assert.match(line, /^\s+(-\w, )?--[\w-]+( <[^>]+>| \[[^\]]+\])?\s{2,}\S/, `${verb}: ${line}`);
      if (verb === 'worker' || verb === 'operator') {
        const options = stdout.split(/\n(?=\s+--)/).filter((o) => /^\s+--/.test(o) && !o.includes('--help'));
        for (const o of options) assert.match(o.replace(/\s+/g, ' '), /env: (BACKBEAT_[A-Z_]+|KUBECONFIG)\)/, `${verb}: ${o.trim()}`);
      }
    }
    const top = await outcome(['--help']);
    assert.match(top.stdout, /Exit codes: 0 done, 1 failed .*\n3 not found .* 4 the status API could not be reached/s);
    for (const verb of VERBS.filter((v) => !v.includes(' '))) assert.match(top.stdout, new RegExp(`\\n  ${verb} `), verb);
  });

  it('says what is wrong in one line and where the help is, exit 2, for bad input of any verb', async () => {
    const cases: [string[], RegExp][] = [
      [[], /^Usage: backbeat /],
      [['frobnicate'], /^backbeat: unknown command 'frobnicate'\n\(see `backbeat --help`\)\n$/],
      [['status', '--bogus', 'a/b/c'], /^backbeat: unknown option '--bogus'\n\(see `backbeat status --help`\)\n$/],
      [['status'], /^backbeat: missing required argument 'object'\n\(see `backbeat status --help`\)\n$/],
      [['status', 'just-a-key'], /^backbeat: give the object as <location>\/<bucket>\/<key>, got "just-a-key"\n\(see `backbeat status --help`\)\n$/],
      [['failed', 'list', '--limit', '0'], /^backbeat: --limit must be a positive whole number, got "0"\n\(see `backbeat failed list --help`\)\n$/],
      [['failed', 'retry'], /^backbeat: failed retry takes one of/],
      [['pause', 'site-b', '--until', 'soon'], /^backbeat: --until must be a time \(ISO 8601\) or a duration like 30m, got "soon"\n/],
      [['backfill', 'r', '--timeout', '5m'], /^backbeat: --timeout goes with --wait/],
      [['status', 'a/b/c', '-o', 'yaml'], /^backbeat: option '-o, --output <format>' argument 'yaml' is invalid\. Allowed choices are text, json\.\n/],
      [['validate'], /^backbeat: required option '-f, --file <path\.\.\.>' not specified\n/],
      [['worker', '--role', 'processor', '--image', 'x'], /^backbeat: unknown option '--image'\n\(see `backbeat worker --help`\)\n$/],
      [['run', '-f', '/nonexistent', '--concurrency', 'lots'], /^backbeat: --concurrency must be an integer ≥ 1, got "lots"\n/],
    ];
    for (const [args, message] of cases) {
      const { code, stdout, stderr } = await outcome(args);
      assert.equal(code, 2, `${args.join(' ')}: ${stderr}`);
      assert.match(args.length === 0 ? stdout + stderr : stderr, message, args.join(' '));
      assert.doesNotMatch(stderr, /\n\s+at /, 'no stack trace');
    }
    assert.equal((await outcome(['--version'])).code, 0);
  });

  it('exits 4 when the status API cannot be reached, with --server or $BACKBEAT_SERVER', async () => {
    const nowhere = `http://127.0.0.1:${String(await freePort())}`;
    for (const [args, env] of [[['status', 'a/b/c', '--server', nowhere], {}], [['backfill', 'r'], { BACKBEAT_SERVER: nowhere }], [['pause', 'site-b'], { BACKBEAT_SERVER: nowhere }]] as const) {
      const { code, stderr } = await outcome([...args], env);
      assert.equal(code, 4, stderr);
      assert.match(stderr, new RegExp(`^backbeat: cannot reach the status API at ${nowhere} `));
    }
  });

  it('takes worker and operator settings from BACKBEAT_<FLAG>, the flag winning', async () => {
    assert.match((await outcome(['worker'], { BACKBEAT_ROLE: 'copier' })).stderr, /--role must be one of populator, scanner, processor, status, gc, webhook, got "copier"/);
    assert.match((await outcome(['worker', '--role', 'copier'], { BACKBEAT_ROLE: 'gc' })).stderr, /got "copier"/);
    assert.match((await outcome(['worker', '--role', 'gc'], { BACKBEAT_LISTEN: 'nowhere' })).stderr, /--listen must be HOST:PORT, got "nowhere"/);
    assert.match((await outcome(['operator'], { BACKBEAT_IMAGE: 'i:1', POD_NAMESPACE: 'ns', BACKBEAT_KAFKA_BROKERS: 'k:9092', BACKBEAT_SCALE_DOWN_DELAY: 'soon' })).stderr, /--scale-down-delay must be an integer ≥ 0, got "soon"/);
    // An empty variable is no setting.
    assert.match((await outcome(['worker', '--role', 'gc'], { BACKBEAT_LISTEN: '', BACKBEAT_KAFKA_TLS: '' })).stderr, /give the Kafka brokers/);
  });

  it('names the answer it got when --server is not the status API, exit 1, not a JSON parse error', async () => {
    const page = createServer((_req, res) => res.writeHead(502, { 'content-type': 'text/html' }).end('<html><body>Bad Gateway</body></html>'));
    page.listen(0, serviceHost);
    await once(page, 'listening');
    const url = `http://${serviceHost}:${String((page.address() as AddressInfo).port)}`;
    try {
      await assert.rejects(backbeat('status', 'a/b/c', '--server', url), (err: Failure) => {
        assert.match(err.stderr ?? '', /answered HTTP 502 with text\/html, not the status API's JSON: is --server the status API's address\?/);
        assert.doesNotMatch(err.stderr ?? '', /Unexpected token/);
        assert.equal(err.code, 1);
        return true;
      });
    } finally {
      page.close();
    }
  });
});
