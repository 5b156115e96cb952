import { ListBucketsCommand, type S3Client } from '@aws-sdk/client-s3';
import { blobAccountOf, locationClient, resolveAzureCredentials, resolveCredentials } from '../lib/config/credentials.ts';
import type { Location, Secret } from '../lib/config/schema.ts';
import { ConfigError } from '../lib/config/validate.ts';
import { classify, reasonOf } from '../lib/s3/errors.ts';
import { notReady, ready, type ConditionInput } from './conditions.ts';

export interface LocationCheck {
  condition: ConditionInput;
  /** A client for a Ready S3 location. */
  client?: S3Client;
  /** The buckets a Ready location listed with these credentials: they exist. */
  buckets?: Set<string>;
}

/**
 * The label a Secret's owner puts on it to let the operator read it: without it, naming a Secret in a
 * Location would hand any Secret of the namespace to whatever endpoint the Location names.
 */
export const CREDENTIALS_LABEL = 'backbeat.io/credentials';

/** Whether the Secret's owner gave it to the operator. */
export const granted = (secret: Secret | undefined): boolean => secret?.metadata.labels?.[CREDENTIALS_LABEL] === 'true';

/** Node's codes for a server certificate that does not chain to a trusted CA, or is not for this host. */
const CERTIFICATE = /^(UNABLE_TO_VERIFY_LEAF_SIGNATURE|SELF_SIGNED_CERT_IN_CHAIN|DEPTH_ZERO_SELF_SIGNED_CERT|UNABLE_TO_GET_ISSUER_CERT(_LOCALLY)?|CERT_HAS_EXPIRED|CERT_NOT_YET_VALID|ERR_TLS_CERT_ALTNAME_INVALID)$/;
const untrustedCertificate = (err: unknown): boolean => [err, (err as { cause?: unknown } | null)?.cause].some((e) => CERTIFICATE.test((e as { code?: string } | null)?.code ?? ''));

/** Why a Location's probe failed, in the terms a person fixes it by. */
function probeFailed(err: unknown, endpoint: string, secret: string): ConditionInput {
  if (untrustedCertificate(err)) return notReady('CertificateNotTrusted', `${endpoint} presented a certificate that is not trusted (${reasonOf(err)}): give the CA that signed it in spec.tls.caBundle`);
  const kind = classify(err);
  if (kind === 'unavailable' || (err as Error).name === 'AbortError') return notReady('EndpointUnreachable', `${endpoint} cannot be reached: ${reasonOf(err)}`);
  if (kind === 'permanent') return notReady('CredentialsRejected', `${endpoint} refused the credentials of Secret "${secret}": ${reasonOf(err)}`);
  return notReady('EndpointError', `${endpoint} failed: ${reasonOf(err)}`);
}

/**
 * Ready when the Secret gives credentials and the endpoint answers an authenticated request with them.
 * Only the operator can tell these apart, so each failure gets its own reason.
 */
export async function checkLocation(location: Location, secret: Secret | undefined, timeoutMs = 5_000): Promise<LocationCheck> {
  const ref = location.spec.credentialsSecretRef;
  if (secret === undefined) return { condition: notReady('SecretNotFound', `Secret "${ref.name}" does not exist in this namespace`) };
  if (!granted(secret)) {
    return { condition: notReady('SecretNotLabelled', `Secret "${ref.name}" is not labelled ${CREDENTIALS_LABEL}=true, so the operator does not use it; label it to give it to Backbeat: kubectl label secret ${ref.name} ${CREDENTIALS_LABEL}=true`) };
  }
  if (location.spec.type === 'azure') return checkAccount(location, secret, timeoutMs);
  let client: S3Client;
  try {
    // Credentials come from the Secret only: the operator's own environment must not stand in for it.
    // Short timeouts and one attempt: a stalled endpoint must not hold up the pass for every other resource.
    client = locationClient(location, resolveCredentials(location, { secrets: new Map([[ref.name, secret]]) }, {}), { requestTimeoutMs: timeoutMs, connectionTimeoutMs: timeoutMs, maxAttempts: 2 });
  } catch (err) {
    if (err instanceof ConfigError) return { condition: notReady('SecretKeyMissing', err.problems.map((p) => p.message).join('; ').replace(/ \(or \$[A-Z0-9_]+\)/g, '')) };
    throw err;
  }
  const endpoint = location.spec.endpoint ?? `AWS S3 (${location.spec.region})`;
  const buckets = new Set<string>();
  try {
    // The probe's listing doubles as the existence check of every bucket the rules name.
    let token: string | undefined;
    do {
      const page = await client.send(new ListBucketsCommand(token !== undefined ? { ContinuationToken: token } : {}), { abortSignal: AbortSignal.timeout(timeoutMs) });
      for (const b of page.Buckets ?? []) if (b.Name !== undefined) buckets.add(b.Name);
      token = page.ContinuationToken;
    } while (token !== undefined && token !== '');
  } catch (err) {
    client.destroy();
    return { condition: probeFailed(err, endpoint, ref.name) };
  }
  return { condition: ready('Reachable', `${endpoint} answers with the credentials of Secret "${ref.name}"`), client, buckets };
}

/** A type: azure Location: Ready when its account lists its containers with the Secret's key or SAS token. */
async function checkAccount(location: Location, secret: Secret, timeoutMs: number): Promise<LocationCheck> {
  const ref = location.spec.credentialsSecretRef;
  let account;
  try {
    account = blobAccountOf(location, resolveAzureCredentials(location, { secrets: new Map([[ref.name, secret]]) }, {}), { requestTimeoutMs: timeoutMs });
  } catch (err) {
    if (err instanceof ConfigError) return { condition: notReady('SecretKeyMissing', err.problems.map((p) => p.message).join('; ').replace(/ \(nor \$[A-Z0-9_]+, \$[A-Z0-9_]+\)/g, '')) };
    throw err;
  }
  const endpoint = `Azure account ${account.name} (${account.url})`;
  const containers = new Set<string>();
  try {
    for await (const c of account.service.listContainers({ abortSignal: AbortSignal.timeout(timeoutMs) })) containers.add(c.name);
  } catch (err) {
    return { condition: probeFailed(err, endpoint, ref.name) };
  }
  return { condition: ready('Reachable', `${endpoint} answers with the credentials of Secret "${ref.name}"`), buckets: containers };
}
