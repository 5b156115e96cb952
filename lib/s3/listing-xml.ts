import type { DeleteMarkerEntry, ListObjectVersionsCommandOutput, ObjectVersion } from '@aws-sdk/client-s3';

// A ListObjectVersions answer read with a few regular expressions instead of the SDK's XML parser: in a
// backfill of small objects the processor lists a destination page per batch, and the SDK's parsing of
// those pages took a tenth of the process's CPU (`make bench --profile`). An S3 listing is flat: each
// <Version> and <DeleteMarker> holds text fields (and an <Owner> of text fields), and text never holds a
// raw '<' (it is escaped), so a field is `<Name>text</Name>`.

const NAMED: Record<string, string> = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" };
const ENTITY = /&(?:#(\d+)|#x([0-9a-fA-F]+)|(amp|lt|gt|quot|apos));/g;

/** XML text with its character and entity references resolved. */
export function xmlText(text: string): string {
  if (!text.includes('&')) return text;
  return text.replace(ENTITY, (_, dec: string | undefined, hex: string | undefined, name: string | undefined) => (dec !== undefined ? String.fromCodePoint(Number(dec)) : hex !== undefined ? String.fromCodePoint(parseInt(hex, 16)) : (NAMED[name ?? ''] ?? '')));
}

const ENTRY = /<(Version|DeleteMarker)>([\s\S]*?)<\/\1>/g;
const FIELD = /<(\w+)(?:\/>|>([^<]*)<\/\1>)/g;

function fieldsOf(body: string): Map<string, string> {
  const fields = new Map<string, string>();
  for (const m of body.matchAll(FIELD)) if (m[1] !== undefined && !fields.has(m[1])) fields.set(m[1], xmlText(m[2] ?? ''));
  return fields;
}

/** A top-level field of the answer (one that entries do not have). */
const topField = (xml: string, name: string): string | undefined => {
  const m = new RegExp(`<${name}(?:/>|>([^<]*)</${name}>)`).exec(xml);
  return m === null ? undefined : xmlText(m[1] ?? '');
};

/** The fields of a ListObjectVersions answer the engine reads, typed as the SDK types them. */
export function parseVersionListing(xml: string): Omit<ListObjectVersionsCommandOutput, '$metadata'> {
  const versions: ObjectVersion[] = [];
  const markers: DeleteMarkerEntry[] = [];
  for (const [, kind, body] of xml.matchAll(ENTRY)) {
    const f = fieldsOf(body ?? '');
    const key = f.get('Key');
    const versionId = f.get('VersionId');
    const latest = f.get('IsLatest');
    const modified = f.get('LastModified');
    const common = {
      ...(key !== undefined ? { Key: key } : {}),
      ...(versionId !== undefined ? { VersionId: versionId } : {}),
      ...(latest !== undefined ? { IsLatest: latest === 'true' } : {}),
      ...(modified !== undefined ? { LastModified: new Date(modified) } : {}),
    };
    if (kind === 'DeleteMarker') {
      markers.push(common);
      continue;
    }
    const [etag, size, storageClass] = [f.get('ETag'), f.get('Size'), f.get('StorageClass')];
    versions.push({ ...common, ...(etag !== undefined ? { ETag: etag } : {}), ...(size !== undefined ? { Size: Number(size) } : {}), ...(storageClass !== undefined ? { StorageClass: storageClass as ObjectVersion['StorageClass'] } : {}) });
  }
  const truncated = topField(xml, 'IsTruncated');
  const nextKey = topField(xml, 'NextKeyMarker');
  const nextVersion = topField(xml, 'NextVersionIdMarker');
  return {
    ...(versions.length > 0 ? { Versions: versions } : {}),
    ...(markers.length > 0 ? { DeleteMarkers: markers } : {}),
    ...(truncated !== undefined ? { IsTruncated: truncated === 'true' } : {}),
    ...(nextKey !== undefined ? { NextKeyMarker: nextKey } : {}),
    ...(nextVersion !== undefined ? { NextVersionIdMarker: nextVersion } : {}),
  };
}
