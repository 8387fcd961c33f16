// FileService.Upload with progress and resume. The protocol (docs/files.md, "Upload
// protocol"): a header, then data messages; the server answers the header at once with the
// session name, streams progress, and ends with the committed File. A broken stream leaves
// the session resumable from its committed offset (whole parts S3 acknowledged): a new
// stream whose header names the session and that offset continues it.
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { stat } from "node:fs/promises";
import { basename } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, type Client } from "@connectrpc/connect";
import { UploadHeaderSchema, type File, type UploadHeader, type UploadProgress } from "./gen/mediagrid/files/v1/file_pb.js";
import { FileService, UploadRequestSchema, UploadState } from "./gen/mediagrid/files/v1/file_service_pb.js";
import { decodeError, retryDelay, type MediagridError } from "./errors.js";

/** The recommended data message size (the server accepts up to its message limit). */
export const CHUNK_SIZE = 1024 * 1024;

/** Bytes to upload that can be read again from any offset (what a resume needs). */
export interface UploadSource {
  readonly size: number;
  /** The bytes from `offset` to the end, in chunks of any size. */
  read(offset: number): AsyncIterable<Uint8Array>;
}

/** A local file as an upload source. */
export async function fileSource(path: string): Promise<UploadSource & { readonly path: string }> {
  const { size } = await stat(path);
  return {
    path,
    size,
    read: (offset) => createReadStream(path, { start: offset, highWaterMark: CHUNK_SIZE }),
  };
}

/** Bytes in memory as an upload source. */
export function bytesSource(data: Uint8Array): UploadSource {
  return {
    size: data.byteLength,
    read: async function* (offset) {
      yield data.subarray(offset);
    },
  };
}

/** Lowercase hex SHA-256 of a source (one pass over it). */
export async function sha256Of(source: UploadSource): Promise<string> {
  const hash = createHash("sha256");
  for await (const chunk of source.read(0)) {
    hash.update(chunk);
  }
  return hash.digest("hex");
}

/** What the server reported, in numbers (byte counts fit a double below 8 PiB). */
export interface UploadProgressEvent {
  /** The session, `uploads/{id}`: pass it as `resume` to continue after a cut. */
  readonly upload: string;
  /** Bytes the server received (including those committed before a resume). */
  readonly receivedBytes: number;
  /** Bytes durably stored (whole parts); a resume starts here. */
  readonly committedBytes: number;
  readonly partsCompleted: number;
  readonly totalBytes: number;
  /** Every byte is sent; the server is storing the last parts and committing the file. */
  readonly sendingDone: boolean;
}

export interface UploadOptions {
  /** Shown name (metadata only); default: the file's base name, or `upload.bin`. */
  displayName?: string;
  contentType?: string;
  /** Lowercase hex SHA-256 the server checks before commit; computed when not given. */
  sha256?: string;
  /** The job the file belongs to, `jobs/{job}`. */
  job?: string;
  /** Upload a new version of this file, `files/{file}`. */
  parent?: string;
  labels?: Record<string, string>;
  /** Continue this session (`uploads/{id}`, from an earlier progress event) instead of
   * starting one; a session already committed returns its file, one that can no longer
   * continue (cancelled, failed, expired) is replaced by a new upload. */
  resume?: string;
  onProgress?: (event: UploadProgressEvent) => void;
  /** Size of each data message (default 1 MiB). */
  chunkSize?: number;
  /** Streams tried in all, each resuming where the last one stopped (default 6). */
  maxAttempts?: number;
  /** First retry delay in ms, doubled per attempt, with full jitter (default 200); a
   * RetryInfo from the server is waited out. */
  backoffMs?: number;
  /** Stops the upload; the session stays resumable. */
  signal?: AbortSignal;
}

// Failures after which the same stream may succeed: the connection or the server went
// away, or another stream raced this one for the session.
const RETRYABLE = new Set([Code.Unavailable, Code.Aborted, Code.Internal, Code.Unknown, Code.Canceled, Code.DeadlineExceeded]);
const RETRYABLE_REASONS = new Set(["WRONG_OFFSET", "UPLOAD_SUPERSEDED"]);

function retryable(error: MediagridError): boolean {
  return RETRYABLE.has(error.code) || RETRYABLE_REASONS.has(error.reason);
}

/** At most `size` bytes per message, without copying. */
async function* rechunk(chunks: AsyncIterable<Uint8Array>, size: number): AsyncIterable<Uint8Array> {
  for await (const chunk of chunks) {
    for (let start = 0; start < chunk.byteLength; start += size) {
      yield chunk.subarray(start, start + size);
    }
  }
}

/**
 * Upload a file path or an UploadSource; resumes by itself after a broken stream and
 * returns the committed File. Errors are MediagridErrors.
 */
export async function upload(
  files: Client<typeof FileService>,
  input: string | UploadSource,
  options: UploadOptions = {},
): Promise<File> {
  const source = typeof input === "string" ? await fileSource(input) : input;
  const chunkSize = options.chunkSize ?? CHUNK_SIZE;
  const maxAttempts = options.maxAttempts ?? 6;
  const backoffMs = options.backoffMs ?? 200;
  // The header of a new session (a resume sends only the session and the offset): the
  // SHA-256 is computed only when one is needed.
  let first: UploadHeader | undefined;
  const newSession = async (): Promise<UploadHeader> =>
    (first ??= create(UploadHeaderSchema, {
      displayName: options.displayName ?? (typeof input === "string" ? basename(input) : "upload.bin"),
      contentType: options.contentType ?? "",
      sizeBytes: BigInt(source.size),
      sha256: options.sha256 ?? (await sha256Of(source)),
      job: options.job ?? "",
      parent: options.parent ?? "",
      labels: options.labels ?? {},
    }));
  let session = "";
  let offset = 0;
  let header: UploadHeader | undefined;
  if (options.resume) {
    const status = (await files.getUploadStatus({ name: options.resume })).upload;
    if (status?.state === UploadState.COMPLETED && status.file) {
      const file = (await files.getFile({ name: status.file })).file;
      if (file) {
        return file;
      }
    } else if (status?.state === UploadState.ACTIVE) {
      session = status.name;
      offset = Number(status.committedBytes);
      header = create(UploadHeaderSchema, { upload: session, offset: status.committedBytes });
    }
  }
  let last: UploadProgressEvent | undefined;
  let sent = false; // every byte was handed to the stream
  const seen = (progress: UploadProgress): void => {
    session ||= progress.upload;
    last = {
      upload: progress.upload,
      receivedBytes: Number(progress.receivedBytes),
      committedBytes: Number(progress.committedBytes),
      partsCompleted: progress.partsCompleted,
      totalBytes: source.size,
      sendingDone: sent,
    };
    options.onProgress?.(last);
  };
  const sendingDone = (): void => {
    sent = true;
    if (last) {
      options.onProgress?.({ ...last, sendingDone: true });
    }
  };
  for (let attempt = 1; ; attempt++) {
    sent = false;
    header ??= await newSession();
    try {
      return await uploadOnce(files, source, header, offset, chunkSize, options.signal, seen, sendingDone);
    } catch (thrown) {
      const error = decodeError(thrown);
      if (options.signal?.aborted || !retryable(error) || attempt >= maxAttempts) {
        throw error;
      }
      await sleep(retryDelay(error, attempt, backoffMs), undefined, { signal: options.signal }).catch(() => {
        throw error; // stopped while waiting
      });
      if (!session) {
        offset = 0; // the session never started: start over
        header = undefined;
        continue;
      }
      const committed = error.reason === "WRONG_OFFSET" ? error.errorInfo?.metadata["committed_offset"] : undefined;
      const resumeAt =
        committed !== undefined
          ? BigInt(committed)
          : ((await files.getUploadStatus({ name: session })).upload?.committedBytes ?? 0n);
      offset = Number(resumeAt);
      header = create(UploadHeaderSchema, { upload: session, offset: resumeAt });
    }
  }
}

async function uploadOnce(
  files: Client<typeof FileService>,
  source: UploadSource,
  header: UploadHeader,
  offset: number,
  chunkSize: number,
  signal: AbortSignal | undefined,
  seen: (progress: UploadProgress) => void,
  sendingDone: () => void,
): Promise<File> {
  // Data waits for the server's answer to the header: a refused header then ends the call
  // with its own status instead of a failed write.
  let answer: (accepted: boolean) => void = () => undefined;
  const accepted = new Promise<boolean>((resolve) => (answer = resolve));
  async function* requests() {
    yield create(UploadRequestSchema, { payload: { case: "header", value: header } });
    if (!(await accepted)) {
      return;
    }
    for await (const chunk of rechunk(source.read(offset), chunkSize)) {
      yield create(UploadRequestSchema, { payload: { case: "data", value: chunk } });
    }
    sendingDone();
  }
  try {
    // No deadline: a stream lasts as long as the file takes; `signal` stops it.
    for await (const response of files.upload(requests(), { signal, timeoutMs: 0 })) {
      if (response.payload.case === "progress") {
        answer(true);
        seen(response.payload.value);
      } else if (response.payload.case === "file") {
        return response.payload.value;
      }
    }
  } finally {
    answer(false);
  }
  throw new ConnectError("the upload stream ended without a file", Code.Internal);
}
