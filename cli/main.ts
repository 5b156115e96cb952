#!/usr/bin/env node
import { Command, CommanderError, Option } from 'commander';
import pkg from '../package.json' with { type: 'json' };
import { ConfigError, formatProblem } from '../lib/config/validate.ts';
import { redactString } from '../lib/log/redact.ts';
import { apiServer, type Output } from './api.ts';
import { backfill } from './backfill.ts';
import { EXIT, Unreachable, UsageError } from './exit.ts';
import { listFailed, retryFailed } from './failed.ts';
import { durationMs, setPause, untilTime } from './pause.ts';
import { operator, runLocal, type Values, worker } from './serve.ts';
import { printStatus } from './status.ts';

// The `backbeat` command: every verb, its options and help, on commander. The verbs' work is in the
// modules beside this one; here, only what the user types and what the process exits with.

// (Imported rather than read: the bundle carries it, wherever it is.)
const VERSION = pkg.version;

/** The environment variable of a flag: --state-dir → BACKBEAT_STATE_DIR. */
const envOf = (flag: string): string => `BACKBEAT_${flag.toUpperCase().replace(/-/g, '_')}`;

/** An option that may also come from the environment (BACKBEAT_<FLAG> unless `env` names another); the flag wins. */
function setting(flags: string, description: string, env?: string): Option {
  const option = new Option(flags, description);
  return option.env(env ?? envOf((option.long ?? '').replace(/^--/, '')));
}

const KAFKA_SECURITY = (): Option[] => [
  setting('--kafka-tls <bool>', 'reach Kafka over TLS: true or false').choices(['true', 'false']),
  setting('--kafka-ca-file <pem>', 'CA bundle that signed the brokers\' certificates (default: the system CAs)'),
  setting('--kafka-sasl-mechanism <name>', 'SASL: plain (TLS only), scram-sha-256 or scram-sha-512').choices(['plain', 'scram-sha-256', 'scram-sha-512']),
  setting('--kafka-sasl-username <name>', 'SASL user'),
  setting('--kafka-sasl-password-file <file>', 'file holding the SASL password'),
];

const BROKERS = (): Option => setting('--brokers <host:port,...>', 'Kafka brokers', 'BACKBEAT_KAFKA_BROKERS');

/** The Kafka cluster and the topics of an installation on Kubernetes (worker and operator alike). */
const TOPICS = (): Option[] => [
  BROKERS(),
  setting('--prefix <name>', 'topic and consumer group prefix').default('backbeat'),
  setting('--partitions <n>', 'partitions of the topics created').default('8'),
  setting('--replication-factor <n>', 'replicas of the topics created (default: min(3, brokers))'),
];

/** How the verbs that ask the status API find it, authenticate, and print. */
const API = (): Option[] => [
  setting('--server <url>', 'the status API', 'BACKBEAT_SERVER').default('http://127.0.0.1:8900'),
  setting('--token-file <file>', 'bearer token to send (e.g. from kubectl create token)', 'BACKBEAT_TOKEN_FILE'),
  setting('--kubeconfig <file>', 'else, the token of this kubeconfig\'s current user', 'KUBECONFIG'),
  new Option('-o, --output <format>', 'text for people, json for scripts').choices(['text', 'json']).default('text'),
];

/** commander's camelCase option names back to the flags' own (what serve.ts and the hints use). */
function flags(opts: Record<string, unknown>): Values {
  return Object.fromEntries(Object.entries(opts).map(([k, v]) => [k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`), v as Values[string]]));
}

/** commander's Command, with a list of options added at once; its subcommands are Verbs too. */
class Verb extends Command {
  addOptions(options: Option[]): this {
    for (const o of options) this.addOption(o);
    return this;
  }
  override createCommand(name?: string): Verb {
    return new Verb(name);
  }
}

/** The command that ran, and what it answered: the process's exit code. */
let current: Command | undefined;
let result: number = EXIT.ok;

/** An action whose answer is the exit code. commander passes the command itself last. */
function act<A extends unknown[]>(verb: (...args: A) => Promise<number> | number): (...args: [...A, Command]) => Promise<void> {
  return async (...args) => {
    current = args.at(-1) as Command;
    result = await verb(...(args.slice(0, -1) as A));
  };
}

/** `failed list ` for that command: what its help is under. */
const pathOf = (c: Command): string => (c.parent === null ? '' : `${pathOf(c.parent)}${c.name()} `);

/** An API verb's common options. */
const apiOf = async (values: Values): Promise<{ server: Awaited<ReturnType<typeof apiServer>>; output: Output }> => ({ server: await apiServer(values), output: values['output'] === 'json' ? 'json' : 'text' });

function program(): Verb {
  const root = new Verb('backbeat')
    .description('Asynchronous S3 replication: every object written to a source bucket copied to every destination, with its metadata and tags.')
    .version(VERSION, '-v, --version')
    .showSuggestionAfterError()
    .addHelpText(
      'after',
      `
Exit codes: 0 done, 1 failed (refused, a server error, versions left failed), 2 bad input (nothing changed),
3 not found (no such object status or rule), 4 the status API could not be reached.
Run \`backbeat <command> --help\` for a command's options.`,
    );

  root
    .command('run')
    .summary('every role in one process, from manifests (local mode)')
    .description(
      'Runs every role in one process from Location, ReplicationRule and Secret manifests, and wires the source buckets\' notifications as the operator does. Without --brokers the queue is embedded and kept in --state-dir. Listening anywhere but loopback needs --api-token-file. A source Location with spec.journal.webhook gets its S3 event notifications on --webhook-listen at POST /v1/journal/<location>, with the token of its Secret.',
    )
    .addOption(new Option('-f, --file <path...>', 'Location, ReplicationRule and Secret manifests: files or folders').makeOptionMandatory())
    .addOption(BROKERS())
    .addOption(setting('--state-dir <dir>', 'where the embedded queue and the status store are kept').default('.backbeat'))
    .addOption(setting('--listen <host:port>', 'the status API').default('127.0.0.1:8900'))
    .addOption(setting('--webhook-listen <host:port>', 'the receiver of webhook journals').default('127.0.0.1:8901'))
    .addOption(setting('--concurrency <n>', 'copies in flight per destination').default('16'))
    .addOption(setting('--processor-threads <n>', 'run the copies on N worker threads, to use more cores (needs --brokers)'))
    .addOption(setting('--prefix <name>', 'names the topics and consumer groups, to keep installations sharing a Kafka cluster apart').default('backbeat'))
    .addOption(setting('--gc-delay <seconds>', 'wait that long before deleting the source copy of a transient Location\'s object').default('0'))
    .addOption(setting('--api-token-file <file>', 'the status API asks for this token (16 characters or more)'))
    .addOptions(KAFKA_SECURITY())
    .action(act((opts: Record<string, unknown>) => runLocal(flags(opts))));

  root
    .command('validate')
    .summary('check manifests, print the replication configs they compile to')
    .addOption(new Option('-f, --file <path...>', 'manifests: files or folders').makeOptionMandatory())
    .action(
      act(async (opts: { file: string[] }) => {
        const { validate } = await import('./validate.ts');
        return validate(opts.file);
      }),
    );

  root
    .command('status')
    .summary('replication status of an object, per destination')
    .argument('<object>', '<location>/<bucket>/<key>')
    .option('--version-id <id>', 'one version (default: every version)')
    .addOptions(API())
    .action(
      act(async (object: string, opts: Record<string, unknown>) => {
        const m = /^([^/]+)\/([^/]+)\/(.+)$/s.exec(object);
        if (m === null) throw new UsageError(`give the object as <location>/<bucket>/<key>, got "${object}"`);
        const values = flags(opts);
        const versionId = values['version-id'];
        return printStatus({ location: m[1] ?? '', bucket: m[2] ?? '', key: m[3] ?? '', ...(typeof versionId === 'string' ? { versionId } : {}), ...(await apiOf(values)) });
      }),
    );

  const failed = root.command('failed').summary('object versions whose replication failed: list them, retry them');
  failed
    .command('list')
    .summary('failed versions per destination: reason, attempts, first and last failure (oldest first)')
    .option('--destination <d>', 'a destination (location/bucket) or a location')
    .option('--limit <n>', 'a page of N (default 100); the last line gives the next page\'s --cursor')
    .option('--cursor <c>', 'where the page starts')
    .addOptions(API())
    .action(
      act(async (opts: Record<string, unknown>) => {
        const values = flags(opts);
        const { server, output } = await apiOf(values);
        const limit = typeof values['limit'] === 'string' ? values['limit'] : undefined;
        if (limit !== undefined && !/^[1-9]\d*$/.test(limit)) throw new UsageError(`--limit must be a positive whole number, got "${limit}"`);
        const page = Object.fromEntries(Object.entries({ destination: values['destination'], limit, cursor: values['cursor'] }).filter(([, v]) => typeof v === 'string')) as Record<string, string>;
        return listFailed(server, page, output);
      }),
    );
  failed
    .command('retry')
    .summary('send failed versions back through the pipeline')
    .argument('[object]', '<location>/<bucket>/<key>')
    .option('--version-id <id>', 'one version of the object')
    .option('--destination <d>', 'every failure of a destination (location/bucket) or a location')
    .option('--all', 'every failure')
    .addOptions(API())
    .action(
      act(async (object: string | undefined, opts: Record<string, unknown>) => {
        const values = flags(opts);
        const destination = typeof values['destination'] === 'string' ? values['destination'] : undefined;
        if ([values['all'] === true, destination !== undefined, object !== undefined].filter(Boolean).length !== 1) throw new UsageError('failed retry takes one of: <location>/<bucket>/<key>, --destination D, --all');
        const { server, output } = await apiOf(values);
        const versionId = typeof values['version-id'] === 'string' ? values['version-id'] : undefined;
        const selector = values['all'] === true ? { all: true as const } : destination !== undefined ? { destination } : { object: object ?? '', ...(versionId !== undefined ? { versionId } : {}) };
        return retryFailed(server, selector, output);
      }),
    );

  root
    .command('pause')
    .summary('stop replicating to a destination location; changes keep queueing')
    .argument('<location>', 'a destination location')
    .option('--until <time>', 'resume then: an ISO 8601 time, or a duration such as 30m or 2h')
    .addOptions(API())
    .action(
      act(async (location: string, opts: Record<string, unknown>) => {
        const values = flags(opts);
        let until: string | undefined;
        try {
          until = typeof values['until'] === 'string' ? untilTime(values['until']) : undefined;
        } catch (err) {
          throw new UsageError((err as Error).message);
        }
        const { server, output } = await apiOf(values);
        return setPause(server, location, 'pause', until, output);
      }),
    );
  root
    .command('resume')
    .summary('resume a paused destination location: what was written meanwhile replicates')
    .argument('<location>', 'a destination location')
    .addOptions(API())
    .action(
      act(async (location: string, opts: Record<string, unknown>) => {
        const { server, output } = await apiOf(flags(opts));
        return setPause(server, location, 'resume', undefined, output);
      }),
    );

  root
    .command('backfill')
    .summary('replicate the objects that were in a rule\'s source bucket before it (or that it missed)')
    .argument('<rule>', 'a ReplicationRule')
    .option('--wait', 'then show the rule\'s figures until nothing is pending (exit 1 if versions are left failed)')
    .option('--timeout <duration>', 'with --wait: stop waiting after this long (e.g. 30m; default: no limit)')
    .addOptions(API())
    .action(
      act(async (rule: string, opts: Record<string, unknown>) => {
        const values = flags(opts);
        const timeout = typeof values['timeout'] === 'string' ? durationMs(values['timeout']) : undefined;
        if (typeof values['timeout'] === 'string' && (timeout === undefined || values['wait'] !== true)) throw new UsageError(`--timeout goes with --wait, as a duration such as 90s, 30m or 2h; got "${values['timeout']}"`);
        const { server, output } = await apiOf(values);
        return backfill({ server, rule, output, ...(values['wait'] === true ? { waitMs: timeout ?? Number.MAX_SAFE_INTEGER } : {}) });
      }),
    );

  root
    .command('worker')
    .summary('one worker role, as the operator\'s Deployments run it')
    .description(
      'One worker role, from the config the operator publishes. The status role keeps its partitions\' state in --state-dir, and other replicas reach it at --advertise-url; with --peer-key-file (a key only the status replicas hold) they trust only owner records signed with it.',
    )
    .addOption(setting('--role <role>', 'populator, scanner, processor, status, gc or webhook').makeOptionMandatory())
    .addOption(setting('--location <name>', 'the source location (populator, scanner, webhook) or destination location (processor)'))
    .addOption(setting('--config <dir>', 'the published config').default('/etc/backbeat/config'))
    .addOption(setting('--credentials <dir>', 'the mounted Location Secrets').default('/etc/backbeat/credentials'))
    .addOptions(TOPICS())
    .addOption(setting('--listen <host:port>', 'metrics, probes and (status role) the status API').default('127.0.0.1:8900'))
    .addOption(setting('--concurrency <n>', 'copies in flight (processor)').default('16'))
    .addOption(setting('--gc-delay <seconds>', 'wait before deleting a transient source copy (gc)').default('0'))
    .addOption(setting('--state-dir <dir>', 'the status store (status)'))
    .addOption(setting('--advertise-url <url>', 'where other status replicas reach this one (status)'))
    .addOption(setting('--peer-key-file <file>', 'the status replicas\' shared key (status)'))
    .addOption(setting('--api-auth <mode>', 'kubernetes: callers checked by TokenReview and SubjectAccessReview (status)').choices(['kubernetes']))
    .addOption(setting('--api-token-file <file>', 'else, the one token callers must send (status)'))
    .addOption(setting('--namespace <ns>', 'where --api-auth kubernetes checks access (default: $POD_NAMESPACE)'))
    .addOption(setting('--kubeconfig <file>', 'the API server, for --api-auth kubernetes (default: in-cluster)', 'KUBECONFIG'))
    .addOptions(KAFKA_SECURITY())
    .action(act((opts: Record<string, unknown>) => worker(flags(opts))));

  root
    .command('operator')
    .summary('the Kubernetes operator: reconciles Locations and ReplicationRules, runs the workers')
    .addOption(setting('--namespace <ns>', 'the namespace it watches and deploys to (default: $POD_NAMESPACE)'))
    .addOption(setting('--image <image>', 'the image of the worker pods').makeOptionMandatory())
    .addOption(setting('--image-pull-policy <policy>', 'of the worker pods').default('IfNotPresent'))
    .addOption(setting('--name <name>', 'the release name: prefix of the objects it creates').default('backbeat'))
    .addOption(setting('--owner <deployment>', 'the operator\'s Deployment, owner of what it creates'))
    .addOption(setting('--kubeconfig <file>', 'the API server (default: in-cluster)', 'KUBECONFIG'))
    .addOptions(TOPICS())
    .addOption(setting('--listen <host:port>', 'metrics and probes').default('127.0.0.1:8080'))
    .addOption(setting('--resync <seconds>', 'a full pass at least this often').default('15'))
    .addOption(setting('--lag-threshold <n>', 'queued tasks per processor replica before scaling up').default('1000'))
    .addOption(setting('--min-replicas <n>', 'processor replicas per destination, at least').default('1'))
    .addOption(setting('--max-replicas <n>', 'processor replicas per destination, at most (capped at the partitions)').default('8'))
    .addOption(setting('--scale-down-delay <seconds>', 'how long the lag must stay low before scaling down').default('60'))
    .addOption(setting('--worker-resources <json>', 'resources of every worker container, e.g. {"requests":{"cpu":"100m"}}'))
    .addOption(setting('--worker-role-resources <json>', 'per role, e.g. {"processor":{"limits":{"memory":"2Gi"}}}'))
    .addOption(setting('--worker-pod <json>', 'pod fields of every worker: nodeSelector, tolerations, affinity, podAnnotations, priorityClassName, imagePullSecrets, env'))
    .addOption(setting('--worker-role-pod <json>', 'the same per role, e.g. {"processor":{"priorityClassName":"high"}}'))
    .addOption(setting('--status-service-account <name>', 'of the status pods (default: <name>-status)'))
    .addOption(setting('--worker-listen-address <address>', 'what the worker pods listen on').default('0.0.0.0'))
    .addOptions(KAFKA_SECURITY())
    .addOption(setting('--kafka-ca-secret <name>', 'the Secret whose ca.crt the worker pods mount'))
    .addOption(setting('--kafka-sasl-password-secret <name>', 'the Secret whose password the worker pods mount'))
    .action(act((opts: Record<string, unknown>) => operator(flags(opts))));

  // Every command: usage errors as one line and a pointer to its help, through exitCodeOf() below.
  const all = (c: Command): Command[] => [c, ...c.commands.flatMap(all)];
  for (const c of all(root)) {
    c.exitOverride()
      .configureOutput({ outputError: (text, write) => write(`backbeat: ${text.replace(/^error: /, '')}`) })
      .showHelpAfterError(`(see \`backbeat ${pathOf(c)}--help\`)`);
  }
  return root;
}

/** What an error ends the process with: a usage error or bad manifest 2, an unreachable API 4, anything else 1. */
function exitCodeOf(err: unknown): number {
  if (err instanceof CommanderError) {
    // Help and version asked for are answers; help shown because no command was given is a usage error.
    if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version') return EXIT.ok;
    return EXIT.usage;
  }
  if (err instanceof ConfigError) {
    for (const p of err.problems) process.stderr.write(`${formatProblem(p)}\n`);
    return EXIT.usage;
  }
  const message = redactString(err instanceof Error ? err.message : String(err));
  if (err instanceof UsageError) {
    process.stderr.write(`backbeat: ${message}\n(see \`backbeat ${current !== undefined ? pathOf(current) : ''}--help\`)\n`);
    return EXIT.usage;
  }
  process.stderr.write(`backbeat: ${message}\n`);
  return err instanceof Unreachable ? EXIT.unreachable : EXIT.failure;
}

// An empty variable counts as unset, as a missing flag does.
for (const [name, value] of Object.entries(process.env)) if (name.startsWith('BACKBEAT_') && value === '') Reflect.deleteProperty(process.env, name);
try {
  await program().parseAsync(process.argv);
  process.exitCode = result;
} catch (err) {
  process.exitCode = exitCodeOf(err);
  // A run that failed half-way may hold connections that would keep the process alive.
  process.exit();
}
