import {
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectVersionsCommand,
  PutObjectCommand,
  UploadPartCommand,
  type GetObjectCommandInput,
  type GetObjectCommandOutput,
  type HeadObjectCommandInput,
  type HeadObjectCommandOutput,
  type ListObjectVersionsCommandInput,
  type ListObjectVersionsCommandOutput,
  type PutObjectCommandInput,
  type PutObjectCommandOutput,
  type S3Client,
  type UploadPartCommandInput,
  type UploadPartCommandOutput,
} from '@aws-sdk/client-s3';
import { directOf } from './client.ts';
import { DirectS3 } from './direct.ts';

// GET, HEAD and PUT of one object, the upload of a part, a page of a bucket's versions: by the client's direct path where it has one and knows the input,
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

export function uploadPart(client: S3Client, input: UploadPartCommandInput): Promise<UploadPartCommandOutput> {
  const direct = directOf(client);
  return direct !== undefined && DirectS3.takesPart(input) ? direct.uploadPart(input) : client.send(new UploadPartCommand(input));
}

export function listVersions(client: S3Client, input: ListObjectVersionsCommandInput): Promise<ListObjectVersionsCommandOutput> {
  const direct = directOf(client);
  return direct !== undefined && DirectS3.takesList(input) ? direct.listVersions(input) : client.send(new ListObjectVersionsCommand(input));
}
