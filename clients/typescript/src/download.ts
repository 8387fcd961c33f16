// FileService.Download: the first message carries the File, the rest the bytes. A broken
// stream is continued from the bytes already received; a whole-file download is checked
// against the File's SHA-256.
import { createHash } from "node:crypto";
import { createWriteStream } from "node:fs";
import { once } from "node:events";
import { setTimeout as sleep } from "node:timers/promises";
import { Code, type Client } from "@connectrpc/connect";
import type { File } from "./gen/mediagrid/files/v1/file_pb.js";
import type { FileService } from "./gen/mediagrid/files/v1/file_service_pb.js";
import { decodeError, retryDelay } from "./errors.js";

export interface DownloadOptions {
  /** An S3 version id; default the current version. */
  versionId?: string;
  /** First byte (default 0). */
  offset?: number;
  /** Number of bytes (default 0: to the end). */
  length?: number;
  /** Called after every chunk with the bytes received so far and the bytes expected. */
  onProgress?: (receivedBytes: number, totalBytes: number) => void;
  /** Streams tried in all, each continuing after the bytes received (default 6). */
  maxAttempts?: number;
  /** First retry delay in ms, doubled per attempt, with full jitter (default 200); a
   * RetryInfo from the server is waited out. */
  backoffMs?: number;
  signal?: AbortSignal;
}

export class ChecksumMismatch extends Error {
  override name = "ChecksumMismatch";
}

const RETRYABLE = new Set([Code.Unavailable, Code.Aborted, Code.Internal, Code.Unknown, Code.Canceled, Code.DeadlineExceeded]);

/** The File and its bytes (or the requested range) as chunks, resuming after breaks. */
export async function download(
  files: Client<typeof FileService>,
  name: string,
  sink: (chunk: Uint8Array) => void | Promise<void>,
  options: DownloadOptions = {},
): Promise<File> {
  const offset = options.offset ?? 0;
  const length = options.length ?? 0;
  const maxAttempts = options.maxAttempts ?? 6;
  const backoffMs = options.backoffMs ?? 200;
  const hash = createHash("sha256");
  let received = 0;
  let record: File | undefined;
  for (let attempt = 1; ; attempt++) {
    try {
      const request = {
        name,
        // Pinned after the first answer: a resumed stream reads the same version.
        versionId: options.versionId || record?.versionId || "",
        offset: BigInt(offset + received),
        length: BigInt(length ? length - received : 0),
      };
      for await (const response of files.download(request, { signal: options.signal, timeoutMs: 0 })) {
        if (response.file && !record) {
          record = response.file;
        }
        if (response.data.byteLength) {
          hash.update(response.data);
          received += response.data.byteLength;
          await sink(response.data);
          if (record) {
            options.onProgress?.(received, length || Number(record.sizeBytes) - offset);
          }
        }
      }
      break;
    } catch (thrown) {
      const error = decodeError(thrown);
      if (options.signal?.aborted || !RETRYABLE.has(error.code) || attempt >= maxAttempts) {
        throw error;
      }
      await sleep(retryDelay(error, attempt, backoffMs), undefined, { signal: options.signal }).catch(() => {
        throw error; // stopped while waiting
      });
    }
  }
  if (!record) {
    throw new ChecksumMismatch(`${name}: the download carried no file record`);
  }
  if (offset === 0 && length === 0 && hash.digest("hex") !== record.sha256) {
    throw new ChecksumMismatch(`the bytes received do not match ${record.name}'s SHA-256`);
  }
  return record;
}

/** The File and its bytes (or a range) in memory. */
export async function downloadBytes(
  files: Client<typeof FileService>,
  name: string,
  options: DownloadOptions = {},
): Promise<{ file: File; data: Uint8Array }> {
  const chunks: Uint8Array[] = [];
  const file = await download(files, name, (chunk) => void chunks.push(chunk), options);
  return { file, data: Buffer.concat(chunks) };
}

/** Write the file (or a range) to `path`; returns its File. */
export async function downloadToFile(
  files: Client<typeof FileService>,
  name: string,
  path: string,
  options: DownloadOptions = {},
): Promise<File> {
  const out = createWriteStream(path);
  try {
    const file = await download(
      files,
      name,
      async (chunk) => {
        if (!out.write(chunk)) {
          await once(out, "drain");
        }
      },
      options,
    );
    out.end();
    await once(out, "finish");
    return file;
  } catch (error) {
    out.destroy();
    throw error;
  }
}
