/** An ETag without its quotes, as S3 quotes it in headers and listings. */
export const unquote = (etag: string | undefined): string => (etag ?? '').replace(/"/g, '');
