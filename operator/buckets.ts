import { GetBucketVersioningCommand, HeadBucketCommand, type S3Client } from '@aws-sdk/client-s3';
import { reasonOf } from '../lib/s3/errors.ts';
import { notReady, type ConditionInput } from './conditions.ts';

/**
 * A bucket a rule reads or writes: it must exist and keep versions. Undefined when it does. `listed`: the
 * Location's bucket listing has it, so it exists (a HEAD would only say so again).
 */
export async function checkBucket(client: S3Client, location: string, bucket: string, role: 'source' | 'destination', listed = false): Promise<ConditionInput | undefined> {
  if (!listed) {
    try {
      await client.send(new HeadBucketCommand({ Bucket: bucket }));
    } catch (err) {
      const status = (err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
      if (status === 404) return notReady('BucketNotFound', `${role} bucket ${location}/${bucket} does not exist`);
      return notReady('BucketUnavailable', `${role} bucket ${location}/${bucket} cannot be checked: ${reasonOf(err)}`);
    }
  }
  const versioning = await client.send(new GetBucketVersioningCommand({ Bucket: bucket }));
  if (versioning.Status !== 'Enabled') {
    return notReady('VersioningDisabled', `${role} bucket ${location}/${bucket} must have versioning enabled (it is ${versioning.Status ?? 'off'})`);
  }
  return undefined;
}
