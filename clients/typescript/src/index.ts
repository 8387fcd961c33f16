// The mediagrid TypeScript client: generated messages and services (src/gen, from
// protos/ by `make ts-client`) and the hand-written layer (auth, upload, download, errors).
export { bearerAuth, type Credential } from "./auth.js";
export { MediagridClient, createMediagridClient, type ClientOptions } from "./client.js";
export { ChecksumMismatch, download, downloadBytes, downloadToFile, type DownloadOptions } from "./download.js";
export { CODE_NAMES, Code, MediagridError, decodeError, decodeErrors, retryDelay, type ErrorInfoDetail, type FieldViolation } from "./errors.js";
export {
  CHUNK_SIZE,
  bytesSource,
  fileSource,
  sha256Of,
  upload,
  type UploadOptions,
  type UploadProgressEvent,
  type UploadSource,
} from "./upload.js";
