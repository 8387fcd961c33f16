"""The TypeScript client (clients/typescript) end to end against the suite as `make run`
starts it: `mediagrid serve all` in a subprocess (dev environment, so the README's dev
administrator exists), its own database and moto S3 server. The client is built with its
own npm dependencies, then node's test runner runs clients/typescript/test/e2e.test.ts
(compiled) against the server; its exit code decides and its output is shown on failure.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from pathlib import Path

import pytest

from services.users.bootstrap import DEV_ADMIN_EMAIL, DEV_ADMIN_PASSWORD
from tests.support.suite_process import FaultSuite

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "clients" / "typescript"
PART = 5 * 1024 * 1024  # the smallest S3 part: a cut upload has a committed part early
JOB_TYPE = "ts.render"
MAX_QUEUED = 3
NODE = shutil.which("node")
NODE_TESTS = 8  # the test() calls of e2e.test.ts
NOTHING_ELSE = {"fail": 0, "cancelled": 0, "skipped": 0, "todo": 0}

pytestmark = pytest.mark.skipif(NODE is None, reason="node is not installed")


async def run(*argv: str, cwd: Path, env: dict[str, str], limit: float) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        *argv,
        cwd=cwd,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), limit)
    except TimeoutError:
        process.kill()
        output, _ = await process.communicate()
        return -1, f"{' '.join(argv)} did not finish in {limit}s\n{output.decode(errors='replace')}"
    assert process.returncode is not None
    return process.returncode, output.decode(errors="replace")


async def build(env: dict[str, str]) -> None:
    """`npm ci` when the package's dependencies are missing, then `tsc` (fast: no-op-ish)."""
    npm = shutil.which("npm")
    assert npm is not None, "node is installed but npm is not"
    if not (PACKAGE / "node_modules" / ".bin" / "tsc").exists():
        code, output = await run(
            npm, "ci", "--no-audit", "--no-fund", cwd=PACKAGE, env=env, limit=300
        )
        assert code == 0, f"npm ci failed:\n{output}"
    code, output = await run(npm, "run", "--silent", "build", cwd=PACKAGE, env=env, limit=120)
    assert code == 0, f"tsc failed:\n{output}"


@pytest.mark.timeout(300)
async def test_typescript_client_end_to_end(
    tmp_path: Path, pg_admin_dsn: str, template_db: str
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIAGRID_")}
    await build(env)
    async with FaultSuite(
        tmp_path,
        pg_admin_dsn,
        template_db,
        environment="dev",
        upload_part_size_bytes=PART,
        # A progress message after every data message: the client's progress is observable
        # whatever the speed of this machine.
        upload_progress_interval_seconds=0,
        job_types=[{"type": JOB_TYPE, "creators": ["user"], "max_run_seconds": 60}],
        job_owner_max_queued=MAX_QUEUED,
    ) as suite:
        assert suite.moto is not None
        # Straight to PostgreSQL and moto: no fault is injected here, so the proxies stay idle.
        server = await suite.serve(
            "all", database_url=suite.direct_dsn, s3_endpoint_url=suite.moto.endpoint
        )
        env.update(
            MEDIAGRID_TEST_ADDRESS=server.address,
            MEDIAGRID_TEST_ADMIN_EMAIL=DEV_ADMIN_EMAIL,
            MEDIAGRID_TEST_ADMIN_PASSWORD=DEV_ADMIN_PASSWORD,
            MEDIAGRID_TEST_PART_SIZE=str(PART),
            MEDIAGRID_TEST_JOB_TYPE=JOB_TYPE,
            MEDIAGRID_TEST_MAX_QUEUED=str(MAX_QUEUED),
        )
        assert NODE is not None
        code, output = await run(
            NODE,
            "--test",
            "--test-reporter=spec",
            "dist/test/e2e.test.js",
            cwd=PACKAGE,
            env=env,
            limit=180,
        )
        assert code == 0, f"node --test exited {code}:\n{output}"
        # Every test of the file ran and passed (none skipped, filtered away or cancelled).
        found = re.findall(r"^\S+ (tests|pass|fail|cancelled|skipped|todo) (\d+)$", output, re.M)
        counts = {name: int(value) for name, value in found}
        assert counts == {**NOTHING_ELSE, "tests": NODE_TESTS, "pass": NODE_TESTS}, output
