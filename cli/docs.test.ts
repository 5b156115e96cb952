import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { requireBinary } from '../e2e/harness/binaries.ts';

// The documentation as a reader follows it: every block marked `runnable` runs as written (from the
// repository's root, with the components `make deps` installed on the PATH); every `backbeat` command
// shown anywhere names a verb and options that exist; every relative link leads somewhere.

const ROOT = new URL('..', import.meta.url).pathname;
const DOCS = ['README.md', ...readdirSync(join(ROOT, 'docs')).filter((f) => f.endsWith('.md')).map((f) => `docs/${f}`)];
const run = promisify(execFile);

interface Block {
  file: string;
  info: string;
  text: string;
}

function blocks(): Block[] {
  return DOCS.flatMap((file) => [...readFileSync(join(ROOT, file), 'utf8').matchAll(/^```([^\n]*)\n([\s\S]*?)^```$/gm)].map((m) => ({ file, info: m[1] ?? '', text: m[2] ?? '' })));
}

/** The commands of a shell block, continuation lines joined, comments dropped. */
const commands = (text: string): string[] =>
  text
    .replace(/\\\n\s*/g, ' ')
    .split('\n')
    .map((l) => l.replace(/(^|\s)#.*$/, '').trim())
    .filter((l) => l !== '');

describe('documentation (README.md, docs/)', function () {
  this.timeout(120_000);
  const env = { ...process.env, PATH: [dirname(process.execPath), dirname(requireBinary('helm')), dirname(requireBinary('kubectl')), process.env['PATH']].join(':') };

  it('runs every block marked runnable, as written', async () => {
    const runnable = blocks().filter((b) => /\brunnable\b/.test(b.info));
    assert.ok(runnable.length >= 3, `runnable blocks: ${String(runnable.length)}`);
    for (const b of runnable) {
      await run('bash', ['-euo', 'pipefail', '-c', b.text], { cwd: ROOT, env }).catch((err: unknown) => {
        const e = err as { stderr?: string; code?: number };
        assert.fail(`${b.file}: this block exited ${String(e.code)}:\n${b.text}\n${e.stderr ?? ''}`);
      });
    }
  });

  it('shows only backbeat verbs and options that exist', async () => {
    const help = new Map<string, string>();
    let checked = 0;
    for (const b of blocks().filter((x) => /^(bash|sh)\b/.test(x.info))) {
      for (const line of commands(b.text)) {
        const m = /(?:^|\s)bin\/backbeat\s+(.*)$|^backbeat\s+(.*)$/.exec(line);
        if (m === null) continue;
        const words = (m[1] ?? m[2] ?? '').split(/\s+/).filter((w) => !w.startsWith('<') && !w.startsWith('>'));
        const verb = words[0] === 'failed' ? words.slice(0, 2).join(' ') : (words[0] ?? '');
        if (verb === '' || verb.startsWith('-') || verb === '<command>') continue;
        if (!help.has(verb)) {
          const { stdout } = await run(process.execPath, [join(ROOT, 'cli/main.ts'), ...verb.split(' '), '--help'], { env }).catch(() => ({ stdout: '' }));
          assert.match(stdout, new RegExp(`^Usage: backbeat ${verb} `), `${b.file}: no verb "${verb}" in: ${line}`);
          help.set(verb, stdout);
        }
        // Flags after the verb, not those of a command substituted into it (<(kubectl ...)).
        const own = line.slice(line.indexOf('backbeat ')).replace(/[<$]\([^)]*\)/g, '');
        for (const flag of own.match(/(?<=\s)--?[a-z][\w-]*/g) ?? []) {
          assert.ok(new RegExp(`(^|[\\s,])${flag}\\b`).test(help.get(verb) ?? ''), `${b.file}: backbeat ${verb} has no option ${flag}: ${line}`);
        }
        checked++;
      }
    }
    assert.ok(checked >= 10, `backbeat commands checked: ${String(checked)}`);
  });

  it('links only to files that exist', () => {
    for (const file of DOCS) {
      for (const [, target] of readFileSync(join(ROOT, file), 'utf8').matchAll(/\]\(([^)#\s]+)(?:#[^)]*)?\)/g)) {
        if (target === undefined || /^[a-z]+:/.test(target)) continue;
        assert.ok(existsSync(resolve(ROOT, dirname(file), target)), `${file}: link to ${target}`);
      }
    }
  });
});
