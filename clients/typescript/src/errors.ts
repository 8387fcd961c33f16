// Failed calls as typed errors: the google.rpc details the server puts in the
// `grpc-status-details-bin` trailer (ErrorInfo always; BadRequest for bad fields; RetryInfo
// when waiting helps) decoded into plain fields, so callers branch on `reason` instead of
// parsing messages.
import { ConnectError, Code, type Interceptor } from "@connectrpc/connect";
import { BadRequestSchema, ErrorInfoSchema, RetryInfoSchema } from "./gen/google/rpc/error_details_pb.js";

export { Code } from "@connectrpc/connect";

/** One invalid field of a request (google.rpc.BadRequest.FieldViolation). */
export interface FieldViolation {
  /** The field's path in the request, for example `job.type` or `header.offset`. */
  readonly field: string;
  readonly description: string;
}

/** google.rpc.ErrorInfo: why the call failed, as a stable machine-readable reason. */
export interface ErrorInfoDetail {
  /** UPPER_SNAKE_CASE, for example `WRONG_OFFSET` or `JOB_QUOTA_EXCEEDED`. */
  readonly reason: string;
  /** The service that decided, for example `files.mediagrid`. */
  readonly domain: string;
  /** Values a client may act on, for example `committed_offset`. */
  readonly metadata: Readonly<Record<string, string>>;
}

/** The gRPC status names, as they appear in docs and in other languages' clients. */
export const CODE_NAMES: Readonly<Record<Code, string>> = {
  [Code.Canceled]: "CANCELLED",
  [Code.Unknown]: "UNKNOWN",
  [Code.InvalidArgument]: "INVALID_ARGUMENT",
  [Code.DeadlineExceeded]: "DEADLINE_EXCEEDED",
  [Code.NotFound]: "NOT_FOUND",
  [Code.AlreadyExists]: "ALREADY_EXISTS",
  [Code.PermissionDenied]: "PERMISSION_DENIED",
  [Code.ResourceExhausted]: "RESOURCE_EXHAUSTED",
  [Code.FailedPrecondition]: "FAILED_PRECONDITION",
  [Code.Aborted]: "ABORTED",
  [Code.OutOfRange]: "OUT_OF_RANGE",
  [Code.Unimplemented]: "UNIMPLEMENTED",
  [Code.Internal]: "INTERNAL",
  [Code.Unavailable]: "UNAVAILABLE",
  [Code.DataLoss]: "DATA_LOSS",
  [Code.Unauthenticated]: "UNAUTHENTICATED",
};

/**
 * A failed call with its details decoded. It is a ConnectError (code, rawMessage, the
 * trailers as `metadata` and the raw details stay available), plus:
 * - `errorInfo`: the ErrorInfo (undefined when none came) and its `reason` ("" then),
 * - `fieldViolations` of a BadRequest (empty when none came),
 * - `retryDelayMs` of a RetryInfo (undefined when none came).
 */
export class MediagridError extends ConnectError {
  // The name stays "ConnectError": connect recognizes its errors by name and shape
  // (ConnectError[Symbol.hasInstance]), so a MediagridError passes where a ConnectError does.
  readonly errorInfo: ErrorInfoDetail | undefined;
  readonly reason: string;
  readonly fieldViolations: readonly FieldViolation[];
  readonly retryDelayMs: number | undefined;

  constructor(error: ConnectError) {
    super(error.rawMessage, error.code, error.metadata, undefined, error);
    this.details = error.details;
    const info = error.findDetails(ErrorInfoSchema)[0];
    this.errorInfo = info && { reason: info.reason, domain: info.domain, metadata: { ...info.metadata } };
    this.reason = info?.reason ?? "";
    this.fieldViolations = error
      .findDetails(BadRequestSchema)
      .flatMap((bad) => bad.fieldViolations.map((v) => ({ field: v.field, description: v.description })));
    const retry = error.findDetails(RetryInfoSchema)[0]?.retryDelay;
    this.retryDelayMs =
      retry === undefined ? undefined : Number(retry.seconds) * 1000 + Math.round(retry.nanos / 1e6);
  }

  // ConnectError's duck-typed check would call every ConnectError a MediagridError.
  static override [Symbol.hasInstance](value: unknown): boolean {
    return Function.prototype[Symbol.hasInstance].call(this, value);
  }

  /** The status name, for example `INVALID_ARGUMENT`. */
  get codeName(): string {
    return CODE_NAMES[this.code];
  }
}

/** Exponential backoff with full jitter, but never shorter than the server's RetryInfo. */
export function retryDelay(error: MediagridError, attempt: number, backoffMs: number): number {
  return Math.max(Math.random() * backoffMs * 2 ** (attempt - 1), error.retryDelayMs ?? 0);
}

/** Any thrown value as a MediagridError (non-Connect errors become UNKNOWN with a cause). */
export function decodeError(error: unknown): MediagridError {
  if (error instanceof MediagridError) {
    return error;
  }
  return new MediagridError(ConnectError.from(error));
}

/**
 * An interceptor that turns every failure of a call (unary, or while reading a stream)
 * into a MediagridError, so `catch (e)` gets the decoded details without a helper call.
 */
export const decodeErrors: Interceptor = (next) => async (request) => {
  let response;
  try {
    response = await next(request);
  } catch (error) {
    throw decodeError(error);
  }
  if (!response.stream) {
    return response;
  }
  const messages = response.message;
  return {
    ...response,
    message: (async function* () {
      try {
        yield* messages;
      } catch (error) {
        throw decodeError(error);
      }
    })(),
  };
};
