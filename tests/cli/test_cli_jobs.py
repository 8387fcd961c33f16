"""``mediagrid jobs``: create, follow, list, cancel and retry jobs from a terminal, against a
real suite (its embedded worker runs the demo job types)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from google.protobuf import json_format
from hypothesis import given
from hypothesis import strategies as st
from mediagrid.jobs.v1 import job_pb2

from services.jobs.cli import job_name, parse_payload, parse_specs, parse_states, state_name
from services.jobs.states import JobState
from tests.cli.conftest import Cli
from tests.support.hypo import relaxed


def test_create_and_watch_a_job_to_its_end(cli: Cli) -> None:
    cli.login()
    made = cli.run("jobs", "create", "sleep", "--payload", '{"seconds": 0.2, "steps": 2}')
    name = made.stdout.strip()
    assert name.startswith("jobs/") and "\n" not in name, made.stdout

    watched = cli.run("jobs", "watch", name, "-o", "json")
    job = json.loads(watched.stdout)
    assert job["name"] == name
    assert job["state"] == "JOB_STATE_SUCCEEDED"
    assert job["result"]["slept_seconds"] == pytest.approx(0.2)
    assert "succeeded" in watched.stderr  # one line per change, on stderr

    shown = cli.run("jobs", "get", name.removeprefix("jobs/")).stdout  # a bare id works too
    for expected in (name, "sleep", "succeeded", "100%"):
        assert expected in shown


def test_a_job_that_fails_makes_watch_exit_1_with_its_error(cli: Cli) -> None:
    cli.login()
    result = cli.run(
        "jobs", "create", "fail", "--payload", '{"mode": "permanent"}', "--watch", check=False
    )
    assert result.returncode == 1, result
    assert "failed" in result.stderr or "dead" in result.stderr
    assert "Traceback" not in result.stderr
    assert "fail" in result.stdout  # the job's table is still printed


def test_list_cancel_and_retry(cli: Cli) -> None:
    cli.login()
    later = cli.run("jobs", "create", "noop", "--delay", "600", "--priority", "3").stdout.strip()
    done = cli.run("jobs", "create", "noop", "--watch", "-o", "json").stdout
    assert json.loads(done)["state"] == "JOB_STATE_SUCCEEDED"

    scheduled = cli.run("jobs", "ls", "--state", "scheduled", "-o", "names").stdout.split()
    assert scheduled == [later]
    listed = json.loads(cli.run("jobs", "ls", "--type", "noop", "-o", "json").stdout)
    assert {j["state"] for j in listed} == {"JOB_STATE_SCHEDULED", "JOB_STATE_SUCCEEDED"}
    assert len(cli.run("jobs", "ls", "--limit", "1", "-o", "names").stdout.split()) == 1

    cancelled = json.loads(cli.run("jobs", "cancel", later, "-o", "json").stdout)
    assert cancelled["state"] == "JOB_STATE_CANCELLED"
    retried = json.loads(cli.run("jobs", "retry", later, "-o", "json").stdout)
    assert retried["state"] in ("JOB_STATE_QUEUED", "JOB_STATE_RUNNING", "JOB_STATE_SUCCEEDED")


def test_bad_input_is_refused_with_a_clear_message(cli: Cli) -> None:
    cli.login()
    for args, code, words in (
        (("jobs", "create", "noop", "--payload", "[1]"), 2, "must be a JSON object"),
        (("jobs", "create", "noop", "--payload", "{"), 2, "not JSON"),
        (("jobs", "create", "noop", "--payload", "@missing.json"), 2, "cannot be read"),
        (("jobs", "create", "no.such.type"), 1, "INVALID_ARGUMENT"),
        (("jobs", "ls", "--state", "sleeping"), 2, "unknown job state 'sleeping'"),
        (("jobs", "get", "jobs/0123"), 1, "INVALID_ARGUMENT"),
        (("jobs", "stats"), 1, "PERMISSION_DENIED"),  # queue statistics: admins, services
    ):
        result = cli.run(*args, check=False)
        assert result.returncode == code, (args, result)
        assert words in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr
        assert result.stdout == ""


def test_an_admin_sees_queue_statistics(cli: Cli) -> None:
    cli.run("login", "--email", "admin@example.com", "--password", "mediagrid-dev-admin")
    cli.run("jobs", "create", "noop", "--delay", "600")
    shown = cli.run("jobs", "stats", "--type", "noop").stdout
    assert "running:" in shown and "oldest ready job waiting" in shown
    assert "noop" in shown


def test_a_batch_from_json_lines_is_created_watched_and_listed(cli: Cli) -> None:
    cli.login()
    (cli.cwd / "jobs.jsonl").write_text(
        '{"type": "sleep", "payload": {"seconds": 0.1}}\n\n{"type": "noop", "priority": 2}\n'
    )
    made = json.loads(cli.run("jobs", "batch", "create", "jobs.jsonl", "-o", "json").stdout)
    name = made["batch"]["name"]
    assert name.startswith("batches/") and len(made["job_names"]) == 2

    watched = cli.run("jobs", "batch", "watch", name, "-o", "json")
    batch = json.loads(watched.stdout)
    assert batch["done"] is True
    assert batch["state_counts"] == {"JOB_STATE_SUCCEEDED": "2"}
    listed = cli.run("jobs", "ls", "--batch", name, "-o", "names").stdout.split()
    assert sorted(listed) == sorted(made["job_names"])

    failing = cli.run(
        "jobs",
        "batch",
        "create",
        "-",
        "--watch",
        check=False,
        input='{"type": "noop"}\n{"type": "fail", "payload": {"mode": "permanent"}}\n',
    )
    assert failing.returncode == 1, failing
    assert "not every job succeeded" in failing.stderr

    in_an_hour = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    later = cli.run(
        "jobs",
        "batch",
        "create",
        "-",
        input='{"type": "noop", "scheduleTime": "' + in_an_hour + '"}\n',
    ).stdout.strip()
    cancelled = json.loads(cli.run("jobs", "batch", "cancel", later, "-o", "json").stdout)
    assert cancelled["state_counts"] == {"JOB_STATE_CANCELLED": "1"}

    bad = cli.run("jobs", "batch", "create", "-", check=False, input='{"type": "noop", "x": 1}\n')
    assert bad.returncode == 2 and "line 1" in bad.stderr and bad.stdout == ""


@relaxed()
@given(st.lists(st.sampled_from(["queued", "running", "succeeded", "dead", "cancelled"])))
def test_states_parse_to_their_enum_values(words: list[str]) -> None:
    states = parse_states(",".join(f" {w.upper()} " for w in words))
    assert [state_name(s) for s in states] == words


@relaxed()
@given(st.text(alphabet=st.characters(categories=["Ll", "Nd"]), min_size=1))
def test_anything_else_is_not_a_state(word: str) -> None:
    known = {state.value for state in JobState}
    if word in known:
        return
    with pytest.raises(ValueError, match="unknown job state"):
        parse_states(word)


@relaxed()
@given(
    st.dictionaries(
        st.text(max_size=10),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=10),
            lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner),
            max_leaves=5,
        ),
        max_size=5,
    )
)
def test_a_json_object_payload_round_trips(value: dict[str, object]) -> None:
    assert parse_payload(json.dumps(value)) == value


@relaxed()
@given(st.text())
def test_any_other_payload_text_is_a_value_error_never_a_crash(text: str) -> None:
    if text.startswith("@"):
        text = "@/nonexistent/" + text[1:].replace("/", "_")
    try:
        value = parse_payload(text)
    except ValueError:
        return
    assert isinstance(value, dict)


@given(st.uuids())
def test_a_bare_id_becomes_a_job_name(uid: object) -> None:
    assert job_name(str(uid)) == f"jobs/{uid}"
    assert job_name(f"jobs/{uid}") == f"jobs/{uid}"


specs = st.builds(
    lambda t, p, prio, attempts, rid: job_pb2.JobSpec(
        type=t, priority=prio, max_attempts=attempts, request_id=rid, payload=p
    ),
    st.from_regex(r"[a-z][a-z0-9.]{0,20}", fullmatch=True),
    st.dictionaries(st.text(max_size=8), st.text(max_size=8) | st.booleans(), max_size=3).map(
        lambda d: json_format.ParseDict(d, job_pb2.JobSpec().payload.__class__())
    ),
    st.integers(min_value=-(2**31), max_value=2**31 - 1),
    st.integers(min_value=0, max_value=2**31 - 1),
    st.text(max_size=12),
)


@relaxed()
@given(st.lists(specs, min_size=1, max_size=5))
def test_job_specs_round_trip_through_json_lines(expected: list[job_pb2.JobSpec]) -> None:
    lines = [json_format.MessageToJson(spec, indent=None) for spec in expected]
    assert parse_specs(lines) == expected


@relaxed()
@given(st.lists(st.text(), max_size=4))
def test_any_other_batch_text_is_a_value_error_never_a_crash(lines: list[str]) -> None:
    try:
        parsed = parse_specs(lines)
    except ValueError:
        return
    assert parsed and all(isinstance(spec, job_pb2.JobSpec) for spec in parsed)
