import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import type { ObjectStatus } from '../../workers/status/fold.ts';
import { sharedKafka } from '../harness/env.ts';
import { httpGet } from '../harness/net.ts';
import { eventually } from '../harness/wait.ts';
import { backbeat, startBackbeat, type RunningBackbeat } from './backbeat.ts';
import { body, sourceBucket, startSites, versionedBucket, writeRule, type Sites } from './sites.ts';


// The status API here takes a token (--api-token-file), as a `backbeat run` reachable by others would.
describe('pause and resume per destination (real `backbeat run` process and CLI)', function () {
  this.timeout(300_000);
  let sites: Sites;
  let a: S3Client, c: S3Client;
  let run: RunningBackbeat;

  const cli = (...args: string[]): Promise<string> => run.cli(...args);
  const statusOf = async (key: string): Promise<ObjectStatus | undefined> => (JSON.parse(await cli('status', `site-a/photos/${key}`, '-o', 'json')) as ObjectStatus[])[0];
  const states = async (key: string): Promise<Record<string, string | undefined>> => {
    const v = await statusOf(key);
    return { b: v?.destinations['site-b/photos-b']?.state, c: v?.destinations['site-c/photos-c']?.state };
  };
  /** When site C's copy of `key` was recorded COMPLETED (ms). */
  const completedAtC = async (key: string): Promise<number> => {
    const d = (await statusOf(key))?.destinations['site-c/photos-c'];
    assert.equal(d?.state, 'COMPLETED');
    return Date.parse(d.updatedAt);
  };
  /** The time a `pause --until` answer names. */
  const untilOf = (answer: string): number => {
    const until = /^site-c: paused until (\S+)\n$/.exec(answer)?.[1];
    assert.ok(until !== undefined, answer);
    return Date.parse(until);
  };
  const destinations = async (): Promise<unknown> => JSON.parse((await httpGet(`${run.server}/v1/destinations`, run.headers)).body);

  before(async () => {
    sites = await startSites('pause');
    [a, c] = [sites.a.client(), sites.c.client()];
    await sourceBucket(sites, 'photos');
    await versionedBucket(sites.b.client(), 'photos-b');
    await versionedBucket(c, 'photos-c');
    writeRule(sites, 'photos', {
      source: { location: 'site-a', bucket: 'photos' },
      destinations: [
        { location: 'site-b', bucket: 'photos-b' },
        { location: 'site-c', bucket: 'photos-c' },
      ],
    });
    run = await startBackbeat(sites, 'pause', [], randomBytes(24).toString('hex'));
  });

  after(async () => {
    await run.process.stop();
    await sites.stop();
  });

  it('holds writes for a paused destination while the others complete, across a SIGKILL, until resumed', async () => {
    assert.equal(await cli('pause', 'site-c'), 'site-c: paused\n');
    await eventually(async () => assert.deepEqual(await destinations(), { destinations: [{ location: 'site-b', paused: false }, { location: 'site-c', paused: true }] }));
    for (let i = 0; i < 3; i++) await a.send(new PutObjectCommand({ Bucket: 'photos', Key: `held/${i}`, Body: `held ${i}` }));
    for (let i = 0; i < 3; i++) await eventually(async () => assert.deepEqual(await states(`held/${i}`), { b: 'COMPLETED', c: 'PENDING' }), 60_000, 500);

    // The pause is durable: with the process and the Kafka broker killed and restarted, site-c stays paused.
    await run.process.kill();
    await (await sharedKafka()).crash();
    await run.process.start(run.ready);
    await eventually(async () => assert.deepEqual(await destinations(), { destinations: [{ location: 'site-b', paused: false }, { location: 'site-c', paused: true }] }));
    await sleep(3_000);
    assert.deepEqual(await states('held/0'), { b: 'COMPLETED', c: 'PENDING' });

    assert.equal(await cli('resume', 'site-c'), 'site-c: resumed\n');
    for (let i = 0; i < 3; i++) {
      await eventually(async () => assert.deepEqual(await states(`held/${i}`), { b: 'COMPLETED', c: 'COMPLETED' }), 60_000, 500);
      assert.equal((await body(c, 'photos-c', `held/${i}`)).toString(), `held ${i}`);
    }
  });

  it('fires a scheduled resume on time', async () => {
    const until = untilOf(await cli('pause', 'site-c', '--until', '6s'));
    await a.send(new PutObjectCommand({ Bucket: 'photos', Key: 'scheduled', Body: 'later' }));
    await eventually(async () => assert.deepEqual(await states('scheduled'), { b: 'COMPLETED', c: 'COMPLETED' }), 60_000, 500);
    // Copied once the pause ended, not before, and soon after (a busy machine may be slow to show the state
    // in between, so the times decide).
    const late = (await completedAtC('scheduled')) - until;
    assert.ok(late >= 0 && late < 30_000, `site C's copy ${String(late)} ms after the scheduled resume`);
  });

  it('resumes by itself when the scheduled resume falls due while Kafka is down for 60 s', async function () {
    this.timeout(400_000);
    const until = untilOf(await cli('pause', 'site-c', '--until', '40s'));
    await a.send(new PutObjectCommand({ Bucket: 'photos', Key: 'kafka-outage', Body: 'waited' }));
    await eventually(async () => assert.deepEqual(await states('kafka-outage'), { b: 'COMPLETED', c: 'PENDING' }), 30_000, 250);
    // Stopped before the resume is due, for longer than it has to wait: it falls due during the outage.
    const kafka = await sharedKafka();
    await kafka.stop();
    assert.ok(Date.now() < until, 'Kafka stopped before the scheduled resume');
    await sleep(60_000);
    await kafka.start();
    await eventually(async () => assert.deepEqual(await states('kafka-outage'), { b: 'COMPLETED', c: 'COMPLETED' }), 180_000, 1_000);
    assert.equal((await body(c, 'photos-c', 'kafka-outage')).toString(), 'waited');
    assert.ok((await completedAtC('kafka-outage')) >= until);
    // Every role is back: what is written now goes the whole way (journal, populator, both processors, status).
    await a.send(new PutObjectCommand({ Bucket: 'photos', Key: 'after-outage', Body: 'back' }));
    await eventually(async () => assert.deepEqual(await states('after-outage'), { b: 'COMPLETED', c: 'COMPLETED' }), 60_000, 500);
  });

  it('lets a newer pause replace a scheduled resume', async () => {
    await cli('pause', 'site-c', '--until', '3s');
    const due = Date.now() + 3_000;
    assert.equal(await cli('pause', 'site-c'), 'site-c: paused\n');
    await a.send(new PutObjectCommand({ Bucket: 'photos', Key: 'replaced', Body: 'x' }));
    // Site B's copy first, then past the replaced resume with room for it to have fired.
    await eventually(async () => assert.deepEqual(await states('replaced'), { b: 'COMPLETED', c: 'PENDING' }), 60_000, 500);
    await sleep(Math.max(0, due + 3_000 - Date.now()));
    assert.deepEqual(await states('replaced'), { b: 'COMPLETED', c: 'PENDING' });
    await cli('resume', 'site-c');
    await eventually(async () => assert.deepEqual(await states('replaced'), { b: 'COMPLETED', c: 'COMPLETED' }), 60_000, 500);
  });

  it('holds a pause decades ahead without a busy timer, and refuses a body over 16 KiB', async () => {
    const pid = run.process.pid;
    assert.ok(pid !== undefined);
    // utime + stime of the process, in clock ticks (100 a second).
    const cpuTicks = (): number => readFileSync(`/proc/${String(pid)}/stat`, 'utf8').split(') ')[1]?.split(' ').slice(11, 13).reduce((n, t) => n + Number(t), 0) ?? NaN;
    untilOf(await cli('pause', 'site-c', '--until', '2100-01-01T00:00:00Z'));
    await sleep(1_000);
    const before = cpuTicks();
    await sleep(3_000);
    // A timer re-armed every millisecond would keep a core busy: 300 ticks.
    assert.ok(cpuTicks() - before < 100, `${String(cpuTicks() - before)} ticks of CPU in 3 s while paused`);
    assert.doesNotMatch(readFileSync(run.process.spec.logFile, 'utf8'), /TimeoutOverflowWarning/);
    const big = await fetch(`${run.server}/v1/destinations/site-c/resume`, { method: 'POST', headers: run.headers, body: JSON.stringify({ pad: 'x'.repeat(17 * 1024) }) });
    assert.equal(big.status, 413);
    assert.deepEqual(await destinations(), { destinations: [{ location: 'site-b', paused: false }, { location: 'site-c', paused: true, until: '2100-01-01T00:00:00.000Z' }] });
    assert.equal(await cli('resume', 'site-c'), 'site-c: resumed\n');
  });

  it('refuses an unknown destination or a past --until, changing nothing', async () => {
    for (const args of [['pause', 'site-z'], ['resume', 'site-z'], ['pause', 'site-c', '--until', '2001-01-01T00:00:00Z'], ['pause', 'site-c', '--until', 'soon']]) {
      await assert.rejects(cli(...args), (err: Error & { code?: number; stderr?: string }) => {
        // An unknown location is not found (3); a bad --until is bad input (2).
        assert.equal(err.code, args[1] === 'site-z' ? 3 : 2, args.join(' '));
        assert.match(err.stderr ?? '', /unknown destination location "site-z" \(known: site-b, site-c\)|must be in the future|must be a time/);
        return true;
      });
    }
    assert.deepEqual(await destinations(), { destinations: [{ location: 'site-b', paused: false }, { location: 'site-c', paused: false }] });
  });

  it('refuses a pause without the API token, or with another, changing nothing', async () => {
    const wrong = `${run.process.spec.logFile}.wrong-token`;
    writeFileSync(wrong, randomBytes(24).toString('hex'));
    for (const [args, message] of [[[], /needs the API token/], [['--token-file', wrong], /the API token is wrong/]] as const) {
      await assert.rejects(backbeat('pause', 'site-c', '--server', run.server, ...args), (err: Error & { code?: number; stderr?: string }) => {
        assert.match(err.stderr ?? '', message);
        return true;
      });
    }
    assert.equal((await httpGet(`${run.server}/v1/destinations`)).status, 401);
    assert.deepEqual(await destinations(), { destinations: [{ location: 'site-b', paused: false }, { location: 'site-c', paused: false }] });
  });
});
