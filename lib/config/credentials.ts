import type { S3Client } from '@aws-sdk/client-s3';
import { createBlobAccount, type AzureCredentials, type BlobAccount } from '../azure/account.ts';
import { registerSecret } from '../log/redact.ts';
import { createS3Client, type S3Credentials, type S3EndpointOptions } from '../s3/client.ts';
import type { Manifests } from './manifests.ts';
import type { Location } from './schema.ts';
import { ConfigError } from './validate.ts';

/** Environment variable prefix for a Secret's keys: `site-a-creds` → `SITE_A_CREDS_`. */
export function envPrefix(secretName: string): string {
  return `${secretName.toUpperCase().replace(/[^A-Z0-9]/g, '_')}_`;
}

function secretValue(m: Pick<Manifests, 'secrets'>, secretName: string, key: string): string | undefined {
  const secret = m.secrets.get(secretName);
  const plain = secret?.stringData?.[key];
  if (plain !== undefined) return plain;
  const encoded = secret?.data?.[key];
  if (encoded !== undefined) return Buffer.from(encoded, 'base64').toString('utf8');
  return undefined;
}

/** A key of the Secret among the manifests, else `$<SECRET>_<SUFFIX>` from the environment. */
const fromSecretOrEnv = (m: Pick<Manifests, 'secrets'>, secretName: string, key: string, suffix: string, env: NodeJS.ProcessEnv): string | undefined => secretValue(m, secretName, key) ?? env[`${envPrefix(secretName)}${suffix}`];

/**
 * A Location's credentials: from its Secret among the manifests, else from the environment
 * (`<SECRET>_ACCESS_KEY_ID`, `<SECRET>_SECRET_ACCESS_KEY`). Secret values are registered for redaction.
 */
export function resolveCredentials(location: Location, m: Pick<Manifests, 'secrets'>, env: NodeJS.ProcessEnv = process.env): S3Credentials {
  const ref = location.spec.credentialsSecretRef;
  const idKey = ref.accessKeyIdKey ?? 'accessKeyId';
  const secretKey = ref.secretAccessKeyKey ?? 'secretAccessKey';
  const prefix = envPrefix(ref.name);
  const accessKeyId = fromSecretOrEnv(m, ref.name, idKey, 'ACCESS_KEY_ID', env);
  const secretAccessKey = fromSecretOrEnv(m, ref.name, secretKey, 'SECRET_ACCESS_KEY', env);
  registerSecret(secretAccessKey);
  const missing = [
    ...(accessKeyId === undefined ? [`"${idKey}" (or $${prefix}ACCESS_KEY_ID)`] : []),
    ...(secretAccessKey === undefined ? [`"${secretKey}" (or $${prefix}SECRET_ACCESS_KEY)`] : []),
  ];
  if (accessKeyId === undefined || secretAccessKey === undefined) {
    throw new ConfigError([
      {
        resource: `Location/${location.metadata.name}`,
        path: 'spec.credentialsSecretRef',
        message: `Secret "${ref.name}" does not provide ${missing.join(' and ')}`,
      },
    ]);
  }
  return { accessKeyId, secretAccessKey };
}

/**
 * A Location's webhook token (spec.journal.webhook.tokenSecretRef): from its Secret among the manifests,
 * else from `$<SECRET>_<KEY>` (key upper-cased, `token` → `TOKEN`). Registered for redaction.
 */
export function resolveWebhookToken(location: Location, m: Pick<Manifests, 'secrets'>, env: NodeJS.ProcessEnv = process.env): string {
  const ref = location.spec.journal?.webhook?.tokenSecretRef;
  if (ref === undefined) throw new ConfigError([{ resource: `Location/${location.metadata.name}`, path: 'spec.journal.webhook', message: 'this location has no webhook journal' }]);
  const key = ref.key ?? 'token';
  const variable = `${envPrefix(ref.name)}${key.toUpperCase().replace(/[^A-Z0-9]/g, '_')}`;
  const token = secretValue(m, ref.name, key) ?? env[variable];
  if (token === undefined || token === '') {
    throw new ConfigError([{ resource: `Location/${location.metadata.name}`, path: 'spec.journal.webhook.tokenSecretRef', message: `Secret "${ref.name}" does not provide "${key}" (or $${variable})` }]);
  }
  registerSecret(token);
  return token;
}

/**
 * A type: azure Location's account key (`accountKeyKey`, default `accountKey`) or, where its Secret has
 * none, SAS token (`sasTokenKey`, default `sasToken`); else `$<SECRET>_ACCOUNT_KEY` or `$<SECRET>_SAS_TOKEN`.
 */
export function resolveAzureCredentials(location: Location, m: Pick<Manifests, 'secrets'>, env: NodeJS.ProcessEnv = process.env): AzureCredentials {
  const ref = location.spec.credentialsSecretRef;
  const keyKey = ref.accountKeyKey ?? 'accountKey';
  const sasKey = ref.sasTokenKey ?? 'sasToken';
  const prefix = envPrefix(ref.name);
  const accountKey = fromSecretOrEnv(m, ref.name, keyKey, 'ACCOUNT_KEY', env);
  if (accountKey !== undefined && accountKey !== '') {
    registerSecret(accountKey);
    return { accountKey };
  }
  const sasToken = fromSecretOrEnv(m, ref.name, sasKey, 'SAS_TOKEN', env);
  if (sasToken !== undefined && sasToken !== '') {
    registerSecret(sasToken);
    return { sasToken };
  }
  throw new ConfigError([
    { resource: `Location/${location.metadata.name}`, path: 'spec.credentialsSecretRef', message: `Secret "${ref.name}" provides neither "${keyKey}" nor "${sasKey}" (nor $${prefix}ACCOUNT_KEY, $${prefix}SAS_TOKEN)` },
  ]);
}

/** The client of a type: azure Location. */
export function blobAccountOf(location: Location, credentials: AzureCredentials, overrides: { requestTimeoutMs?: number } = {}): BlobAccount {
  const { spec } = location;
  return createBlobAccount({
    ...overrides,
    accountName: spec.azure?.accountName ?? '',
    ...(spec.endpoint !== undefined ? { endpoint: spec.endpoint } : {}),
    credentials,
    maxSockets: spec.maxConnections,
    ...(spec.tls !== undefined ? { tls: tlsOf(spec.tls) } : {}),
  });
}

/** A Location's client, whatever its type, with the credentials its Secret gives. */
export function connectLocation(location: Location, m: Pick<Manifests, 'secrets'>, env: NodeJS.ProcessEnv = process.env): S3Client | BlobAccount {
  return location.spec.type === 'azure' ? blobAccountOf(location, resolveAzureCredentials(location, m, env)) : locationClient(location, resolveCredentials(location, m, env));
}

const tlsOf = (tls: NonNullable<Location['spec']['tls']>): { insecureSkipVerify?: boolean; ca?: string } => ({ ...(tls.insecureSkipVerify === true ? { insecureSkipVerify: true } : {}), ...(tls.caBundle !== undefined ? { ca: tls.caBundle } : {}) });

/** `overrides` tune the client, e.g. the operator's short timeouts for probes. */
export function locationClient(location: Location, credentials: S3Credentials, overrides: Pick<S3EndpointOptions, 'requestTimeoutMs' | 'connectionTimeoutMs' | 'maxAttempts'> = {}): S3Client {
  const { spec } = location;
  return createS3Client({
    ...overrides,
    ...(spec.endpoint !== undefined ? { endpoint: spec.endpoint } : {}),
    region: spec.region,
    ...(spec.forcePathStyle !== undefined ? { forcePathStyle: spec.forcePathStyle } : {}),
    credentials,
    checksumMode: spec.checksumMode,
    maxSockets: spec.maxConnections,
    ...(spec.tls !== undefined ? { tls: tlsOf(spec.tls) } : {}),
  });
}
