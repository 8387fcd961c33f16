"""``mediagrid jobs``: create, follow, list, cancel and retry jobs from a terminal, against a
real suite (its embedded worker runs the demo job types)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from mediagrid.jobs.v1 import job_pb2

from services.jobs.cli import job_name, parse_payload, parse_states, state_name
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


@relaxed()
@given(st.lists(st.sampled_from(["queued", "running", "succeeded", "dead", "cancelled"])))
def test_states_parse_to_their_enum_values(words: list[str]) -> None:
    states = parse_states(",".join(f" {w.upper()} " for w in words))
    assert [state_name(s) for s in states] == words


@relaxed()
@given(st.text(alphabet=st.characters(categories=["Ll", "Nd"]), min_size=1))
def test_anything_else_is_not_a_state(word: str) -> None:
    known = {state_name(v) for _, v in job_pb2.JobState.items()} - {"unspecified"}
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
