// End to end against a running suite (started by tests/clients/test_typescript_client.py):
// what another team would do with this client. The tests run in order and share state.
//
// Environment: MEDIAGRID_TEST_ADDRESS (host:port), MEDIAGRID_TEST_ADMIN_EMAIL and _ADMIN_PASSWORD,
// MEDIAGRID_TEST_PART_SIZE (the server's upload part size), MEDIAGRID_TEST_JOB_TYPE (a job type users
// may create), MEDIAGRID_TEST_MAX_QUEUED (the server's job_owner_max_queued).
import assert from "node:assert/strict";
import { createHash, randomBytes, randomUUID } from "node:crypto";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { ConnectError } from "@connectrpc/connect";
import {
  Code,
  MediagridError,
  bytesSource,
  createMediagridClient,
  type MediagridClient,
  type UploadProgressEvent,
  type UploadSource,
} from "../src/index.js";
import type { File } from "../src/gen/mediagrid/files/v1/file_pb.js";
import { JobState, type Batch, type Job } from "../src/gen/mediagrid/jobs/v1/job_pb.js";
import { Role } from "../src/gen/mediagrid/users/v1/user_service_pb.js";

function env(name: string): string {
  const value = process.env[name];
  assert.ok(value, `${name} must be set (the pytest wrapper sets it)`);
  return value;
}

const address = env("MEDIAGRID_TEST_ADDRESS");
const partSize = Number(env("MEDIAGRID_TEST_PART_SIZE"));
const jobType = env("MEDIAGRID_TEST_JOB_TYPE");
const maxQueued = Number(env("MEDIAGRID_TEST_MAX_QUEUED"));
const PASSWORD = "a long enough test password";
const MiB = 1024 * 1024;

const sha256 = (data: Uint8Array): string => createHash("sha256").update(data).digest("hex");

/** The MediagridError a call failed with (fails the test when it succeeded). */
async function failure(call: Promise<unknown> | (() => Promise<unknown>)): Promise<MediagridError> {
  try {
    await (typeof call === "function" ? call() : call);
  } catch (error) {
    assert.ok(error instanceof MediagridError, `not a MediagridError: ${String(error)}`);
    return error;
  }
  assert.fail("the call succeeded");
}

let scratch = "";
let admin: MediagridClient;
let alice: MediagridClient; // a user
let worker: MediagridClient; // a service principal with an API key
let aliceName = "";
let apiKeyName = "";
const uploaded = { file: undefined as File | undefined, data: new Uint8Array() };

async function createUser(email: string, role: Role, password = PASSWORD): Promise<string> {
  const response = await admin.users.createUser({ user: { email, role }, password });
  assert.ok(response.user);
  return response.user.name;
}

before(async () => {
  scratch = await mkdtemp(join(tmpdir(), "mediagrid-ts-"));
  admin = createMediagridClient({ address });
  alice = createMediagridClient({ address });
  worker = createMediagridClient({ address });
});

after(async () => {
  await rm(scratch, { recursive: true, force: true });
});

test("login and API key: the admin logs in; a worker calls with an API key; bad credentials are UNAUTHENTICATED", async () => {
  const wrong = await failure(admin.login(env("MEDIAGRID_TEST_ADMIN_EMAIL"), "not the password at all"));
  assert.equal(wrong.code, Code.Unauthenticated);
  assert.equal(wrong.codeName, "UNAUTHENTICATED");
  assert.equal(wrong.reason, "INVALID_CREDENTIALS");
  assert.equal(wrong.errorInfo?.domain, "users.mediagrid");

  const login = await admin.login(env("MEDIAGRID_TEST_ADMIN_EMAIL"), env("MEDIAGRID_TEST_ADMIN_PASSWORD"));
  assert.match(login.token, /\S{16,}/);
  assert.equal(login.user?.role, Role.ADMIN);
  const me = await admin.users.getUser({ name: "users/me" });
  assert.equal(me.user?.email, env("MEDIAGRID_TEST_ADMIN_EMAIL"));

  const email = `alice-${randomUUID().slice(0, 8)}@example.com`;
  aliceName = await createUser(email, Role.USER);
  await alice.login(email, PASSWORD);

  // The worker is a service user without a password: it calls with an API key, scoped to
  // working on jobs of one type.
  const service = await createUser(`ts-worker-${randomUUID().slice(0, 8)}@example.com`, Role.SERVICE, "");
  const created = await admin.users.createApiKey({
    parent: service,
    apiKey: { displayName: "TypeScript worker", permissions: ["jobs.work"], jobTypes: [jobType] },
  });
  assert.match(created.key, /^mgk_/);
  assert.deepEqual(created.apiKey?.jobTypes, [jobType]);
  apiKeyName = created.apiKey!.name;
  worker.setCredential(created.key);
  const idle = await worker.workers.claimJobs({ workerId: "ts-worker", types: [jobType], maxJobs: 1 });
  assert.deepEqual(idle.jobs, []); // authenticated, authorized, nothing queued yet
});

test("upload: a file streamed from disk with progress messages, checked by SHA-256", async () => {
  const data = randomBytes(partSize + 3 * MiB); // two parts
  const path = join(scratch, "clip.bin");
  await writeFile(path, data);
  const events: UploadProgressEvent[] = [];
  const file = await alice.upload(path, {
    contentType: "application/octet-stream",
    labels: { origin: "typescript" },
    onProgress: (event) => events.push(event),
  });
  assert.equal(file.sha256, sha256(data));
  assert.equal(file.sizeBytes, BigInt(data.byteLength));
  assert.equal(file.displayName, "clip.bin");
  assert.equal(file.owner, aliceName);
  assert.deepEqual(file.labels, { origin: "typescript" });
  // The first message answers the header (nothing received yet); then progress while bytes
  // arrive; once every byte is sent, the events say so (the server is committing).
  assert.ok(events.length >= 3, `only ${events.length} progress messages`);
  assert.equal(events[0]?.receivedBytes, 0);
  assert.match(events[0]?.upload ?? "", /^uploads\/[0-9a-f]{32}$/);
  for (let i = 1; i < events.length; i++) {
    assert.ok(events[i]!.receivedBytes >= events[i - 1]!.receivedBytes, "received bytes went back");
  }
  assert.ok(events.some((e) => e.receivedBytes > 0 && e.receivedBytes < data.byteLength), "no progress mid-way");
  assert.equal(events.at(-1)?.sendingDone, true);
  assert.equal(events.at(-1)?.receivedBytes, data.byteLength);
  assert.equal(events.at(-1)?.totalBytes, data.byteLength);
  assert.equal(events.filter((e) => e.sendingDone).at(0)?.receivedBytes !== undefined, true);
  assert.ok(!events[1]?.sendingDone, "sending was done at the first data message");
  uploaded.file = file;
  uploaded.data = data;
});

test("upload: a stream cut after the first part resumes from the committed offset", async () => {
  const data = randomBytes(partSize + 2 * MiB);
  const cutAt = partSize + MiB; // past the first part: it is on its way to S3 when the cut comes
  const stop = new AbortController();
  // The first stream sends bytes up to cutAt, then waits until the upload is stopped.
  const firstStream: UploadSource = {
    size: data.byteLength,
    read: async function* (offset) {
      yield data.subarray(offset, cutAt);
      await new Promise((resolve) => stop.signal.addEventListener("abort", resolve, { once: true }));
    },
  };
  let session = "";
  const cut = await failure(
    alice.upload(firstStream, {
      displayName: "cut.bin",
      sha256: sha256(data),
      signal: stop.signal,
      onProgress: (event) => {
        session = event.upload;
        if (event.receivedBytes >= cutAt) {
          stop.abort();
        }
      },
    }),
  );
  assert.equal(cut.code, Code.Canceled);
  assert.match(session, /^uploads\/[0-9a-f]{32}$/);
  const status = (await alice.files.getUploadStatus({ name: session })).upload;
  assert.equal(status?.sizeBytes, BigInt(data.byteLength));

  const events: UploadProgressEvent[] = [];
  const file = await alice.upload(bytesSource(data), {
    resume: session,
    sha256: sha256(data),
    onProgress: (event) => events.push(event),
  });
  // The resumed stream started at the first part's end: the bytes before it were not sent again.
  assert.equal(events[0]?.upload, session);
  assert.equal(events[0]?.receivedBytes, partSize);
  assert.equal(events[0]?.committedBytes, partSize);
  assert.equal(file.sha256, sha256(data));
  assert.equal(file.sizeBytes, BigInt(data.byteLength));
  assert.equal(file.displayName, "cut.bin");
  const done = (await alice.files.getUploadStatus({ name: session })).upload;
  assert.equal(done?.file, file.name);
  const { data: back } = await alice.download(file.name);
  assert.equal(sha256(back), sha256(data));

  // A session already committed returns its file without sending anything.
  const again = await alice.upload(bytesSource(data), { resume: session, sha256: sha256(data) });
  assert.equal(again.name, file.name);
  assert.equal(again.versionId, file.versionId);
});

test("download: the whole file (SHA-256 checked), a range, and one written to disk", async () => {
  const { file: record, data } = uploaded;
  assert.ok(record);
  const whole = await alice.download(record.name);
  assert.equal(whole.file.sha256, record.sha256);
  assert.ok(Buffer.from(whole.data).equals(data));

  const offset = partSize - 100; // across a part boundary
  const ranged = await alice.download(record.name, { offset, length: 1000 });
  assert.ok(Buffer.from(ranged.data).equals(data.subarray(offset, offset + 1000)));

  const path = join(scratch, "copy.bin");
  let reported = 0;
  await alice.downloadToFile(record.name, path, { onProgress: (received) => (reported = received) });
  assert.equal(sha256(await readFile(path)), record.sha256);
  assert.equal(reported, data.byteLength);
});

test("presigned URL: fetched over HTTP with a Range header", async () => {
  const { file: record, data } = uploaded;
  assert.ok(record);
  const { url, expireTime } = await alice.files.createDownloadUrl({ name: record.name, ttl: { seconds: 300n } });
  assert.ok(expireTime && expireTime.seconds > BigInt(Math.floor(Date.now() / 1000)));
  const reply = await fetch(url, { headers: { Range: "bytes=1000-1999" } });
  assert.equal(reply.status, 206);
  assert.ok(Buffer.from(await reply.arrayBuffer()).equals(data.subarray(1000, 2000)));
});

/** Wait for what a watch should show; fail (instead of hanging) when the watch ends first. */
async function untilSeen(seen: Promise<void>, watch: Promise<void>): Promise<void> {
  await Promise.race([
    seen,
    watch.then(() => assert.fail("the watch ended before showing what was expected")),
  ]);
}

/** Claim one job of `jobType` as the TypeScript worker (waiting for it server-side). */
async function claimOne(expected: string): Promise<{ job: Job; leaseId: string }> {
  const claimed = await worker.workers.claimJobs(
    { workerId: "ts-worker", types: [jobType], maxJobs: 1, wait: { seconds: 10n } },
    { timeoutMs: 30_000 },
  );
  const [first] = claimed.jobs;
  assert.ok(first?.job, "no job was claimed");
  assert.equal(first.job.name, expected);
  return { job: first.job, leaseId: first.leaseId };
}

test("job: created by a user, run by a TypeScript worker (claim, progress, complete), watched", async () => {
  const { file: record } = uploaded;
  assert.ok(record);
  const created = await alice.jobs.createJob({
    job: {
      type: jobType,
      // snake_case keys inside a Struct are kept as they are.
      payload: { source_file: record.name, frame_count: 3, options: { keep_audio: true } },
      files: [record.name],
    },
  });
  const name = created.job!.name;
  assert.equal(created.job?.state, JobState.QUEUED);

  const seen: Job[] = [];
  let sawProgress: () => void = () => undefined;
  const progressSeen = new Promise<void>((resolve) => (sawProgress = resolve));
  const watching = (async () => {
    for await (const { job } of alice.jobs.watchJob({ name }, { timeoutMs: 60_000 })) {
      if (job) {
        seen.push(job);
        if (job.progressPercent === 50) {
          sawProgress();
        }
      }
    }
  })();

  const { job, leaseId } = await claimOne(name);
  assert.equal(job.state, JobState.RUNNING);
  assert.deepEqual(job.payload, { source_file: record.name, frame_count: 3, options: { keep_audio: true } });
  assert.deepEqual(job.files, [record.name]);
  const lease = { job: name, leaseId };
  await worker.workers.reportProgress({ lease, percent: 50, message: "half the frames" });
  await untilSeen(progressSeen, watching); // the watcher saw the progress before the job finished
  const done = await worker.workers.completeJob({ lease, result: { thumbnail_count: 3, ok: true } });
  assert.equal(done.state, JobState.SUCCEEDED);
  await watching; // WatchJob ends at a final state

  const last = seen.at(-1)!;
  assert.equal(last.state, JobState.SUCCEEDED);
  assert.deepEqual(last.result, { thumbnail_count: 3, ok: true });
  const running = seen.find((j) => j.progressPercent === 50);
  assert.equal(running?.state, JobState.RUNNING);
  assert.equal(running?.progressMessage, "half the frames");

  // A finished job cannot be cancelled: FAILED_PRECONDITION with its reason.
  const finished = await failure(alice.jobs.cancelJob({ name }));
  assert.equal(finished.code, Code.FailedPrecondition);
  assert.equal(finished.reason, "JOB_FINISHED");
});

test("batch: watched with WatchBatch while the worker runs it; the quota error carries RetryInfo", async () => {
  const specs = Array.from({ length: maxQueued }, (_, i) => ({ type: jobType, payload: { index: i } }));
  const { batch, jobNames } = await alice.jobs.createBatch({ displayName: "ts batch", jobs: specs });
  assert.ok(batch);
  assert.equal(jobNames.length, maxQueued);
  assert.equal(batch.totalJobs, BigInt(maxQueued));

  // Every job alice may have waiting is queued: one more is refused until some start.
  const quota = await failure(alice.jobs.createJob({ job: { type: jobType } }));
  assert.equal(quota.code, Code.ResourceExhausted);
  assert.equal(quota.reason, "JOB_QUOTA_EXCEEDED");
  assert.equal(quota.errorInfo?.metadata["limit"], String(maxQueued));
  assert.ok(quota.retryDelayMs !== undefined && quota.retryDelayMs > 0, "no RetryInfo");

  const updates: Batch[] = [];
  let watchStarted: () => void = () => undefined;
  const started = new Promise<void>((resolve) => (watchStarted = resolve));
  const watching = (async () => {
    for await (const { batch: current } of alice.jobs.watchBatch({ name: batch.name }, { timeoutMs: 60_000 })) {
      if (current) {
        updates.push(current);
        watchStarted();
      }
    }
  })();
  await untilSeen(started, watching); // the watch shows the batch before any job runs
  const claimed = await worker.workers.claimJobs(
    { workerId: "ts-worker", types: [jobType], maxJobs: maxQueued, wait: { seconds: 10n } },
    { timeoutMs: 30_000 },
  );
  assert.deepEqual(claimed.jobs.map((c) => c.job?.name).sort(), [...jobNames].sort());
  for (const { job, leaseId } of claimed.jobs) {
    const lease = { job: job!.name, leaseId };
    await worker.workers.reportProgress({ lease, percent: 30 });
    await worker.workers.completeJob({ lease, result: { index: job!.payload?.["index"] ?? null } });
  }
  await watching; // WatchBatch ends when every job finished

  const last = updates.at(-1)!;
  assert.equal(last.done, true);
  assert.equal(last.progressPercent, 100);
  assert.equal(last.stateCounts["JOB_STATE_SUCCEEDED"], BigInt(maxQueued));
  assert.ok(updates.length >= 2, "WatchBatch sent only the final state");
  assert.equal(updates[0]?.done, false);
});

test("errors: every kind arrives decoded (code, ErrorInfo, BadRequest)", async () => {
  const { file: record } = uploaded;
  assert.ok(record);

  // UNAUTHENTICATED: no credential, then a credential that is not a token.
  const anonymous = createMediagridClient({ address });
  const missing = await failure(anonymous.files.getFile({ name: record.name }));
  assert.equal(missing.code, Code.Unauthenticated);
  assert.equal(missing.reason, "MISSING_TOKEN");
  const bogus = createMediagridClient({ address, credential: "not-a-real-token" });
  const invalid = await failure(bogus.users.getUser({ name: "users/me" }));
  assert.equal(invalid.code, Code.Unauthenticated);
  assert.ok(invalid.reason.length > 0);

  // PERMISSION_DENIED: a user asking for an administrator's call, and for someone else's file.
  const adminsOnly = await failure(alice.users.listUsers({}));
  assert.equal(adminsOnly.code, Code.PermissionDenied);
  assert.equal(adminsOnly.reason, "PERMISSION_DENIED");
  const adminFile = await admin.upload(bytesSource(randomBytes(1000)), { displayName: "admin.bin" });
  const notYours = await failure(alice.files.getFile({ name: adminFile.name }));
  assert.equal(notYours.code, Code.PermissionDenied);
  assert.equal(notYours.errorInfo?.domain, "files.mediagrid");
  const notAWorker = await failure(alice.workers.claimJobs({ workerId: "x", types: [jobType], maxJobs: 1 }));
  assert.equal(notAWorker.code, Code.PermissionDenied);
  assert.equal(notAWorker.reason, "NOT_A_WORKER");
  const outOfScope = await failure(worker.workers.claimJobs({ workerId: "x", types: ["other.type"], maxJobs: 1 }));
  assert.equal(outOfScope.code, Code.PermissionDenied);
  assert.equal(outOfScope.reason, "JOB_TYPE_NOT_CLAIMABLE");

  // NOT_FOUND, with the resource in the metadata.
  const absent = `files/${randomBytes(16).toString("hex")}`;
  const notFound = await failure(admin.files.getFile({ name: absent }));
  assert.equal(notFound.code, Code.NotFound);
  assert.equal(notFound.reason, "FILE_NOT_FOUND");
  assert.equal(notFound.errorInfo?.metadata["resource"], absent);

  // INVALID_ARGUMENT with a BadRequest naming the field.
  const badName = await failure(alice.files.getFile({ name: "file-without-collection" }));
  assert.equal(badName.code, Code.InvalidArgument);
  assert.equal(badName.reason, "INVALID_NAME");
  assert.deepEqual(
    badName.fieldViolations.map((v) => v.field),
    ["name"],
  );
  assert.ok(badName.fieldViolations[0]!.description.length > 0);
  const weak = await failure(admin.users.createUser({ user: { email: "not an email", role: Role.USER }, password: "short" }));
  assert.equal(weak.code, Code.InvalidArgument);
  assert.deepEqual(weak.fieldViolations.map((v) => v.field).sort(), ["password", "user.email"]);

  // ALREADY_EXISTS: an email taken.
  const me = (await alice.users.getUser({ name: "users/me" })).user!;
  const taken = await failure(admin.users.createUser({ user: { email: me.email, role: Role.USER }, password: PASSWORD }));
  assert.equal(taken.code, Code.AlreadyExists);
  assert.equal(taken.reason, "EMAIL_TAKEN");

  // OUT_OF_RANGE: bytes past the end, with the size in the metadata.
  const past = await failure(alice.download(record.name, { offset: Number(record.sizeBytes) + 1 }));
  assert.equal(past.code, Code.OutOfRange);
  assert.equal(past.reason, "RANGE_PAST_END");
  assert.equal(past.errorInfo?.metadata["size_bytes"], String(record.sizeBytes));

  // FAILED_PRECONDITION while streaming: a resume at the wrong offset.
  const stop = new AbortController();
  let session = "";
  await failure(
    alice.upload(
      {
        size: 2 * partSize,
        read: async function* () {
          yield new Uint8Array(MiB);
          await new Promise((resolve) => stop.signal.addEventListener("abort", resolve, { once: true }));
        },
      },
      {
        sha256: "0".repeat(64),
        signal: stop.signal,
        onProgress: (event) => {
          session = event.upload;
          stop.abort();
        },
      },
    ),
  );
  const files = alice.files;
  const wrongOffset = await failure(async () => {
    const requests = (async function* () {
      yield { payload: { case: "header" as const, value: { upload: session, offset: 12345n } } };
    })();
    for await (const _ of files.upload(requests)) {
      // the header is refused before any progress
    }
  });
  assert.equal(wrongOffset.code, Code.FailedPrecondition);
  assert.equal(wrongOffset.reason, "WRONG_OFFSET");
  assert.equal(wrongOffset.errorInfo?.metadata["committed_offset"], "0");
  assert.equal(wrongOffset.errorInfo?.metadata["upload"], session);

  // UNAUTHENTICATED again: a revoked API key.
  await admin.users.revokeApiKey({ name: apiKeyName });
  const revoked = await failure(worker.workers.claimJobs({ workerId: "x", types: [jobType], maxJobs: 1 }));
  assert.equal(revoked.code, Code.Unauthenticated);
  assert.equal(revoked.reason, "API_KEY_REVOKED");

  // Decoded errors are ConnectErrors too: generic handling keeps working.
  assert.ok(wrongOffset instanceof ConnectError);
  assert.match(wrongOffset.message, /^\[failed_precondition\] /);
  assert.ok(wrongOffset.details.length >= 1);
});
