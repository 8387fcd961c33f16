// One transport (gRPC over HTTP/2) and a client per service, with bearer auth and decoded
// errors installed. The generated clients are exposed as they are: every RPC of the protos
// is callable, with the request as a plain object.
import { createClient, type Client, type Interceptor, type Transport } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { bearerAuth, type Credential } from "./auth.js";
import { decodeErrors } from "./errors.js";
import type { File } from "./gen/mediagrid/files/v1/file_pb.js";
import { FileService } from "./gen/mediagrid/files/v1/file_service_pb.js";
import { VideoService } from "./gen/mediagrid/files/v1/video_service_pb.js";
import { JobService } from "./gen/mediagrid/jobs/v1/job_service_pb.js";
import { WorkerService } from "./gen/mediagrid/jobs/v1/worker_service_pb.js";
import { UserService, type LoginResponse } from "./gen/mediagrid/users/v1/user_service_pb.js";
import { downloadBytes, downloadToFile, type DownloadOptions } from "./download.js";
import { upload, type UploadOptions, type UploadSource } from "./upload.js";

export interface ClientOptions {
  /** `host:port` (plaintext HTTP/2) or a URL, `http://host:port` or `https://host:port`. */
  address: string;
  /** A session token or an API key (or a function giving it); see `login`. */
  credential?: Credential;
  /** Deadline of unary calls in ms (default 30 s). Streams (uploads, downloads, watches)
   * have none unless a call passes `timeoutMs`. */
  timeoutMs?: number;
  /** Interceptors run before the client's own (auth, error decoding). */
  interceptors?: Interceptor[];
}

/** The mediagrid services behind one address. */
export class MediagridClient {
  readonly transport: Transport;
  readonly files: Client<typeof FileService>;
  readonly videos: Client<typeof VideoService>;
  readonly jobs: Client<typeof JobService>;
  readonly workers: Client<typeof WorkerService>;
  readonly users: Client<typeof UserService>;
  private credential: Credential;

  constructor(options: ClientOptions) {
    this.credential = options.credential ?? "";
    const baseUrl = /^https?:\/\//.test(options.address) ? options.address : `http://${options.address}`;
    this.transport = createGrpcTransport({
      baseUrl,
      defaultTimeoutMs: options.timeoutMs ?? 30_000,
      interceptors: [...(options.interceptors ?? []), bearerAuth(() => this.currentCredential()), decodeErrors],
    });
    this.files = createClient(FileService, this.transport);
    this.videos = createClient(VideoService, this.transport);
    this.jobs = createClient(JobService, this.transport);
    this.workers = createClient(WorkerService, this.transport);
    this.users = createClient(UserService, this.transport);
  }

  private async currentCredential(): Promise<string> {
    return typeof this.credential === "function" ? this.credential() : this.credential;
  }

  /** Use this session token or API key from now on. */
  setCredential(credential: Credential): void {
    this.credential = credential;
  }

  /** Log in with a password and use the session token from now on. */
  async login(email: string, password: string): Promise<LoginResponse> {
    const response = await this.users.login({ email, password });
    this.credential = response.token;
    return response;
  }

  /** Upload a file path or source with progress; resumes after a cut (see UploadOptions). */
  upload(source: string | UploadSource, options?: UploadOptions): Promise<File> {
    return upload(this.files, source, options);
  }

  /** A file's bytes (or a range) in memory; a whole file is checked against its SHA-256. */
  download(name: string, options?: DownloadOptions): Promise<{ file: File; data: Uint8Array }> {
    return downloadBytes(this.files, name, options);
  }

  /** A file's bytes (or a range) written to `path`. */
  downloadToFile(name: string, path: string, options?: DownloadOptions): Promise<File> {
    return downloadToFile(this.files, name, path, options);
  }
}

export function createMediagridClient(options: ClientOptions): MediagridClient {
  return new MediagridClient(options);
}
