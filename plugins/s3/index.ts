/**
 * The `s3` storage plugin: AWS S3 and S3-compatible servers (MinIO, Ceph RGW, ...).
 * Cheap to import: the AWS SDK is loaded only by create(), through ./s3-storage.js.
 */
import type { PluginContext, PluginManifest, Storage } from '../../core/types.js';

export interface S3StorageOptions {
  bucket: string;
  region?: string;
  /** Custom endpoint for S3-compatible servers, e.g. `http://127.0.0.1:9000`. */
  endpoint?: string;
  forcePathStyle?: boolean;
  /** When absent: the standard AWS credential chain (env, profile, SSO, instance/container role). */
  accessKeyId?: string;
  secretAccessKey?: string;
  sessionToken?: string;
  storageClass?: string;
  serverSideEncryption?: 'AES256' | 'aws:kms';
  sseKmsKeyId?: string;
  partSizeMB?: number;
  uploadConcurrency?: number;
  maxAttempts?: number;
  requestTimeoutMs?: number;
  connectTimeoutMs?: number;
}

export const S3_DEFAULTS = {
  partSizeMB: 8,
  uploadConcurrency: 4,
  maxAttempts: 5,
  requestTimeoutMs: 30_000,
  connectTimeoutMs: 10_000,
} as const;

const STORAGE_CLASSES = [
  'STANDARD',
  'REDUCED_REDUNDANCY',
  'STANDARD_IA',
  'ONEZONE_IA',
  'INTELLIGENT_TIERING',
  'GLACIER',
  'GLACIER_IR',
  'DEEP_ARCHIVE',
  'OUTPOSTS',
  'EXPRESS_ONEZONE',
];

export const optionsSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['bucket'],
  properties: {
    bucket: { type: 'string', minLength: 3, maxLength: 63, description: 'Bucket name.' },
    region: { type: 'string', minLength: 1, description: 'AWS region; default: the AWS chain (AWS_REGION, profile), or us-east-1 with a custom endpoint.' },
    endpoint: { type: 'string', pattern: '^https?://[^\\s/]+(/.*)?$', 'x-message': 'must be an http:// or https:// URL', description: 'Endpoint URL of an S3-compatible server.' },
    forcePathStyle: { type: 'boolean', description: 'Address buckets as http://host/bucket (most S3-compatible servers need this).' },
    accessKeyId: { type: 'string', minLength: 1, description: 'Static credentials; default: the AWS credential chain.' },
    secretAccessKey: { type: 'string', minLength: 1 },
    sessionToken: { type: 'string', minLength: 1 },
    storageClass: { type: 'string', enum: STORAGE_CLASSES },
    serverSideEncryption: { type: 'string', enum: ['AES256', 'aws:kms'] },
    sseKmsKeyId: { type: 'string', minLength: 1, description: 'KMS key for serverSideEncryption: aws:kms.' },
    partSizeMB: { type: 'integer', minimum: 5, maximum: 5120, default: S3_DEFAULTS.partSizeMB, description: 'Multipart part size; objects up to this size are one PutObject.' },
    uploadConcurrency: { type: 'integer', minimum: 1, maximum: 64, default: S3_DEFAULTS.uploadConcurrency, description: 'Parts uploaded at once (memory: partSizeMB x this).' },
    maxAttempts: { type: 'integer', minimum: 1, maximum: 20, default: S3_DEFAULTS.maxAttempts, description: 'Tries per request, first one included.' },
    requestTimeoutMs: { type: 'integer', minimum: 100, default: S3_DEFAULTS.requestTimeoutMs, description: 'A request with no bytes moving for this long fails and is retried.' },
    connectTimeoutMs: { type: 'integer', minimum: 100, default: S3_DEFAULTS.connectTimeoutMs },
  },
  dependentRequired: {
    accessKeyId: ['secretAccessKey'],
    secretAccessKey: ['accessKeyId'],
    sessionToken: ['accessKeyId', 'secretAccessKey'],
    sseKmsKeyId: ['serverSideEncryption'],
  },
} as const;

export const manifest: PluginManifest<'storage', S3StorageOptions, Storage> = {
  name: 's3',
  kind: 'storage',
  optionsSchema,
  async create(options: S3StorageOptions, context: PluginContext): Promise<Storage> {
    const { S3Storage } = await import('./s3-storage.js');
    return S3Storage.create(options, context);
  },
};
