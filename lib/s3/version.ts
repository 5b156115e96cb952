/** S3 names the version of an unversioned object 'null'; requests for it omit the version id. */
export const versionParam = (versionId: string): { VersionId?: string } => (versionId === 'null' ? {} : { VersionId: versionId });
