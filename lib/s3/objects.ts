import { GetObjectCommand, HeadObjectCommand, PutObjectCommand, type GetObjectCommandInput, type GetObjectCommandOutput, type HeadObjectCommandInput, type HeadObjectCommandOutput, type PutObjectCommandInput, type PutObjectCommandOutput, type S3Client } from '@aws-sdk/client-s3';
import { directOf } from './client.ts';
import { DirectS3 } from './direct.ts';

// GET, HEAD and PUT of one object: by the client's direct path where it has one and knows the input,
// else by the SDK. Same answers, same errors either way.

export function getObject(client: S3Client, input: GetObjectCommandInput): Promise<GetObjectCommandOutput> {
  const direct = directOf(client);
  return direct !== undefined && DirectS3.takesGet(input) ? direct.get(input) : client.send(new GetObjectCommand(input));
}

export function headObject(client: S3Client, input: HeadObjectCommandInput): Promise<HeadObjectCommandOutput> {
  const direct = directOf(client);
  return direct !== undefined && DirectS3.takesGet(input) ? direct.head(input) : client.send(new HeadObjectCommand(input));
}

export function putObject(client: S3Client, input: PutObjectCommandInput): Promise<PutObjectCommandOutput> {
  const direct = directOf(client);
  return direct !== undefined && DirectS3.takesPut(input) ? direct.put(input) : client.send(new PutObjectCommand(input));
}
