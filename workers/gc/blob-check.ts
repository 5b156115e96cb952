import type { HeadObjectCommandOutput } from '@aws-sdk/client-s3';
import type { BlobAccount } from '../../lib/azure/account.ts';
import { blobMetadataName } from '../../lib/azure/names.ts';
import { unquote } from '../../lib/s3/etag.ts';
import { isNotFound } from '../../lib/s3/errors.ts';
import { REPLICA_VERSION_META } from '../../lib/s3/replica-marks.ts';
import type { TaskDestination } from '../../lib/queue/messages.ts';

/**
 * Why the blob of a type: azure destination does not verifiably hold the source version (undefined when
 * it does): its marks name the version, its size is the source's, and its Content-MD5 is the source's
 * ETag where that ETag is an MD5 (a single-part version not encrypted at rest; the copy checked the
 * others block by block).
 */
export async function checkBlobReplica(account: BlobAccount, target: TaskDestination, key: string, versionId: string, source: HeadObjectCommandOutput): Promise<string | undefined> {
  let props;
  try {
    props = await account.service.getContainerClient(target.bucket).getBlockBlobClient(key).getProperties();
  } catch (err) {
    if (isNotFound(err)) return `${target.id}: no blob`;
    throw err;
  }
  if (props.metadata?.[blobMetadataName(REPLICA_VERSION_META)] !== versionId) return `${target.id}: the blob holds no replica of this version`;
  if (props.contentLength !== source.ContentLength) return `${target.id}: blob size ${String(props.contentLength)} differs from source size ${String(source.ContentLength)}`;
  const etag = unquote(source.ETag);
  const md5 = props.contentMD5 !== undefined ? Buffer.from(props.contentMD5).toString('hex') : undefined;
  if (source.ServerSideEncryption === undefined && /^[0-9a-f]{32}$/.test(etag) && md5 !== etag) return `${target.id}: blob MD5 ${String(md5)} differs from source ETag ${etag}`;
  return undefined;
}
