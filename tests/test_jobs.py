"""SciCat jobs after ingestion (the ESS format's ``jobs:``): the schema section, their creation
once per dataset and type (redeliveries, restarts), refusals and outages that never cost the
dataset, the job letters ``replay`` re-submits, and the stand-in's job routes."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from helpers.jobs import ARCHIVE, EXAMPLE, jobs_of
from helpers.pipeline import PID, MakePipeline, ingest
from helpers.standin import V4_DATASET, V4_PID, call
from scicat_ingestor.commands.replay import replay_command
from scicat_ingestor.commands.validate import validate_schema
from scicat_ingestor.config.model import IngestorConfig, build
from scicat_ingestor.ingest.jobs import JobRetry, JobSubmitter
from scicat_ingestor.ingest.letters import JOB_KIND
from scicat_ingestor.ingest.outcome import Created, DryRun, Existed
from scicat_ingestor.ops.metrics import REGISTRY
from scicat_ingestor.schema.jobs import JobDraft, build_jobs
from scicat_ingestor.schema.loader import load_schema_file
from scicat_ingestor.schema.model import SchemaError
from scicat_ingestor.schema.operators import Value
from scicat_ingestor.schema.variables import VariableFailure, VariableResults
from scicat_ingestor.scicat.routes import v3_job
from scicat_ingestor.testing.scicat import SciCatStandIn

REFUSED = """\
jobs:
  nosuch:
    type: nosuch
    job_params: {datasetList: [{pid: <pid>, files: []}]}
    owner_user: ingestor
"""
HEAD = "id: x\nname: X\ninstrument: coda\nselector: filename:contains:x\norder: 1\n"


# ---- the schema section -------------------------------------------------------------------


def test_the_ess_example_with_jobs_loads_unchanged() -> None:
    schema, warnings = load_schema_file(EXAMPLE)
    [job] = schema.jobs
    assert (job.name, job.type.text) == ("embargo_period", "embargo_period")
    assert not [w for w in warnings if ": jobs" in w]


def test_variables_and_schema_sections_are_optional(tmp_path: Path) -> None:
    path = tmp_path / "x.imsc.yml"
    path.write_text(HEAD + REFUSED)
    schema, _ = load_schema_file(path)
    assert (schema.variables, schema.fields, [j.name for j in schema.jobs]) == ((), (), ["nosuch"])


@pytest.mark.parametrize(
    ("jobs", "error"),
    [
        ("jobs: [a]", "x.imsc.yml: jobs: must be a mapping, found list"),
        ("jobs: {a: {job_params: {}, owner_user: u}}", "jobs.a.type: required key is missing"),
        ("jobs: {a: {type: t, job_params: [], owner_user: u}}", "jobs.a.job_params: must be a"),
        ("jobs: {a: {type: t, job_params: {}, owner: u}}", "jobs.a.owner: unknown key; did you"),
        (
            "jobs: {a: {type: '', job_params: {}, owner_user: u}}",
            "jobs.a.type: must be a non",
        ),
        ("jobs: {a: {type: t, job_params: {}}}", "jobs.a: needs one of owner_user, owner_group"),
    ],
)
def test_job_errors_name_the_file_and_key(tmp_path: Path, jobs: str, error: str) -> None:
    path = tmp_path / "x.imsc.yml"
    path.write_text(HEAD + jobs + "\n")
    with pytest.raises(SchemaError) as raised:
        load_schema_file(path)
    assert str(raised.value).startswith(str(path.parent)) and error in str(raised.value)


def test_unknown_references_and_a_repeated_type_warn(tmp_path: Path) -> None:
    path = tmp_path / "x.imsc.yml"
    second = "  again:\n    type: nosuch\n    job_params: {who: <nobody>}\n    owner_user: u\n"
    path.write_text(HEAD + REFUSED + second)
    _, warnings = load_schema_file(path)
    assert [w.split(": ", 1)[1] for w in warnings] == [
        "jobs.again: <nobody> is not a variable; this job will not be created",
        "jobs.again.type: same type as jobs.nosuch: the ingestor creates one job per dataset "
        "and type, so only the first of them",
    ]


def test_jobs_are_rendered_recursively_with_the_pid_scicat_assigned() -> None:
    schema, _ = load_schema_file(EXAMPLE)
    results = VariableResults({"pid": Value("sent"), "pi_email": Value("pi@example.com")})
    [draft], failures = build_jobs(schema, results, "assigned")
    assert failures == ()
    assert draft.body == {
        "type": "embargo_period",
        "jobParams": {"datasetList": [{"pid": "assigned", "files": []}]},
        "ownerUser": "pit_manager",
        "ownerGroup": "pit_management",
        "contactEmail": "pi@example.com",
    }
    failed = VariableResults({}, (VariableFailure("pi_email", {}, "SciCat down"),))
    assert build_jobs(schema, failed, "p")[1][0].error == (
        "unresolved variable name <pi_email> (that variable failed)"
    )


def test_the_v3_body_carries_the_datasets_and_the_contact() -> None:
    body = {
        "type": "archive",
        "jobParams": {"datasetList": [{"pid": "p", "files": []}], "tapes": 2},
        "ownerUser": "u",
        "ownerGroup": "g",
        "contactEmail": "c@example.com",
    }
    assert v3_job(body, "") == {
        "type": "archive",
        "datasetList": [{"pid": "p", "files": []}],
        "jobParams": {"tapes": 2},
        "ownerGroup": "g",
        "emailJobInitiator": "c@example.com",
    }


# ---- the NeXus preview ----------------------------------------------------------------------


def test_the_nexus_preview_shows_the_rendered_job(tmp_path: Path, coda: Path) -> None:
    config = build(
        IngestorConfig,
        {"ingestion": {"file_handling": {"data_directory": str(tmp_path / "data")}}},
        "test",
    )
    proposal = {"pi_firstname": "Ada", "pi_lastname": "L", "pi_email": "ada@example.com"}

    def fetch(url: str) -> Any:
        return proposal if url.startswith("proposals/") else [{"id": "odin"}]

    out = io.StringIO()
    validate_schema(config, [str(EXAMPLE)], str(coda), out, fetch=fetch)
    jobs = out.getvalue().split("\nJobs (")[1]
    assert (
        "\n  embargo_period:\n    type: embargo_period\n    jobParams:\n      datasetList:\n"
        f"      - pid: {PID}\n        files: []\n    ownerUser: pit_manager\n"
        "    ownerGroup: pit_management\n    contactEmail: ada@example.com\n"
    ) in jobs


# ---- creating them: the pipeline and the stand-in -------------------------------------------


@pytest.fixture
def schemas_dir(tmp_path: Path) -> Path:
    """The ESS example with a second job (archive) added: two jobs per dataset."""
    directory = tmp_path / "schemas"
    directory.mkdir()
    text = EXAMPLE.read_text().replace("\njobs:\n", "\njobs:\n" + ARCHIVE)
    (directory / EXAMPLE.name).write_text(text)
    return directory


def _count(job_type: str, outcome: str) -> float:
    labels = {"type": job_type, "outcome": outcome}
    return REGISTRY.get_sample_value("scicat_ingestor_jobs_total", labels) or 0.0


API_VERSIONS = pytest.mark.parametrize("api_version", [3, 4])


@pytest.mark.integration
@API_VERSIONS
def test_one_job_per_schema_job_across_redeliveries_and_a_restart(
    make_pipeline: MakePipeline, coda: Path, scicat_standin: SciCatStandIn, api_version: int
) -> None:
    scicat = {"api_version": api_version}
    created_before = _count("archive", "created")
    exists_before = _count("archive", "exists")
    pipeline = make_pipeline(scicat=scicat)
    assert isinstance(ingest(pipeline, coda, job_id="j"), Created)
    for _ in range(3):  # redelivered
        assert ingest(pipeline, coda, job_id="j") == Existed(PID)
    assert ingest(make_pipeline(scicat=scicat), coda, job_id="j") == Existed(PID)  # restart
    jobs = jobs_of(scicat_standin, PID)
    assert [(job["type"], job["statusCode"]) for job in jobs] == [
        ("archive", "jobSubmitted"),
        ("embargo_period", "jobSubmitted"),
    ]
    assert len(scicat_standin.origdatablocks) == 1
    if api_version == 4:  # v3 has no owner fields: the server's contact is the account's
        assert (jobs[1]["ownerUser"], jobs[1]["ownerGroup"]) == ("pit_manager", "pit_management")
    assert _count("archive", "created") - created_before == 1
    assert _count("archive", "exists") - exists_before == 4


@pytest.mark.integration
@API_VERSIONS
def test_a_refused_job_type_costs_not_the_dataset(
    make_pipeline: MakePipeline,
    coda: Path,
    *,
    scicat_standin: SciCatStandIn,
    schemas_dir: Path,
    caplog: pytest.LogCaptureFixture,
    api_version: int,
) -> None:
    schema = schemas_dir / EXAMPLE.name
    schema.write_text(schema.read_text().split("\njobs:\n")[0] + "\n" + REFUSED)
    letters = schemas_dir.parent / "dead.jsonl"
    ingestion = {"dead_letter": {"file": str(letters)}}
    pipeline = make_pipeline(scicat={"api_version": api_version}, ingestion=ingestion)
    before = _count("nosuch", "rejected")
    caplog.set_level(logging.INFO)
    caplog.clear()  # the schema's own load-time warning
    assert isinstance(ingest(pipeline, coda), Created)
    [warning] = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert warning.name == "scicat_ingestor.jobs"
    assert "Job nosuch (type nosuch) of dataset" in warning.getMessage()
    assert "400: Invalid job type: nosuch; recorded for replay in" in warning.getMessage()
    assert _count("nosuch", "rejected") - before == 1
    [letter] = [json.loads(line) for line in letters.read_text().splitlines()]
    assert (letter["kind"], letter["scicat_job"]["dataset_pid"]) == (JOB_KIND, PID)
    assert letter["scicat_job"]["body"]["type"] == "nosuch"
    assert jobs_of(scicat_standin, PID) == []


@pytest.mark.integration
def test_a_dry_run_logs_the_job_bodies_and_creates_nothing(
    make_pipeline: MakePipeline,
    coda: Path,
    scicat_standin: SciCatStandIn,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="scicat_ingestor.pipeline")
    assert ingest(make_pipeline(ingestion={"dry_run": True}), coda) == DryRun(PID)
    lines = [r.getMessage() for r in caplog.records if "would create job" in r.getMessage()]
    assert lines[0].startswith('Dry run: would create job archive: {"type": "archive"')
    assert f'"jobParams": {{"datasetList": [{{"pid": "{PID}", "files": []}}]}}' in lines[0]
    assert len(lines) == 2
    assert jobs_of(scicat_standin, PID) == []


@pytest.mark.integration
@pytest.mark.parametrize("scicat_standin", ["4.5"], indirect=True)
def test_a_server_without_jobs_costs_not_the_dataset(
    make_pipeline: MakePipeline, coda: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Backend 4.5 as the stand-in plays it: no job routes (404)."""
    caplog.set_level(logging.WARNING)
    assert isinstance(ingest(make_pipeline(), coda), Created)
    messages = [r.getMessage() for r in caplog.records if r.name == "scicat_ingestor.jobs"]
    assert len(messages) == 2 and all("(rejected): SciCat GET jobs → 404" in m for m in messages)


@pytest.mark.integration
@API_VERSIONS
def test_server_errors_for_a_while_then_the_job_is_created(
    make_pipeline: MakePipeline, coda: Path, scicat_standin: SciCatStandIn, api_version: int
) -> None:
    """Four 503s: two job attempts (a request and its one transport retry each), 1 s and ~2 s
    apart (the default backoff), then the look-up and the POST go through."""
    pipeline = make_pipeline(scicat={"api_version": api_version, "max_retries": 1})
    prefix = "/api/v4/jobs" if api_version == 4 else "/api/v3/jobs"
    scicat_standin.faults.fail_next(4, 503, prefix)
    assert isinstance(ingest(pipeline, coda), Created)
    assert [job["type"] for job in jobs_of(scicat_standin, PID)] == ["archive", "embargo_period"]
    key = "GET /v4/jobs 503" if api_version == 4 else "GET /jobs 503"
    assert scicat_standin.stats()["requests"][key] == 4


@pytest.mark.integration
def test_a_post_whose_answer_is_lost_does_not_make_a_second_job(
    make_pipeline: MakePipeline, coda: Path, scicat_standin: SciCatStandIn
) -> None:
    """SciCat creates each job after our timeout (2 s): the next attempt's look-up finds it."""
    pipeline = make_pipeline(scicat={"api_version": 4, "max_retries": 0})
    scicat_standin.faults.delay(2.2, "ownerUser")  # in the POST bodies only, not the look-ups
    assert isinstance(ingest(pipeline, coda), Created)
    assert [job["type"] for job in jobs_of(scicat_standin, PID)] == ["archive", "embargo_period"]
    assert scicat_standin.stats()["requests"]["POST /v4/jobs 201"] == 2


@pytest.mark.integration
def test_a_job_given_up_in_an_outage_is_created_by_replay(
    make_pipeline: MakePipeline,
    coda: Path,
    scicat_standin: SciCatStandIn,
    schemas_dir: Path,
    tmp_path: Path,
) -> None:
    (schemas_dir / EXAMPLE.name).write_text(EXAMPLE.read_text())  # the embargo job only
    letters = tmp_path / "dead.jsonl"
    pipeline = make_pipeline(scicat={"api_version": 4, "max_retries": 0})
    assert isinstance(ingest(pipeline, coda), Created)
    params = {"datasetList": [{"pid": PID, "files": []}]}
    draft = JobDraft("archive", "archive", PID, {"type": "archive", "jobParams": params})
    draft.body["ownerUser"] = "ingestor"
    submitter = JobSubmitter(pipeline.client, str(letters), JobRetry(seconds=0))
    scicat_standin.faults.fail_next(1, 503, "/api/v4/jobs")
    result = submitter.submit(draft, str(coda))
    assert result.outcome == "unavailable" and "→ 503" in result.reason
    assert [job["type"] for job in jobs_of(scicat_standin, PID)] == ["embargo_period"]
    config = build(
        IngestorConfig,
        {
            "scicat": {"host": scicat_standin.url, "token": scicat_standin.token},
            "ingestion": {"schemas_directory": str(schemas_dir)},
        },
        "test",
    )
    out = io.StringIO()
    assert replay_command(config, str(letters), out) == 0, out.getvalue()
    assert "1 dead letter(s), 0 file(s), 1 SciCat job(s)" in out.getvalue()
    assert [job["type"] for job in jobs_of(scicat_standin, PID)] == ["archive", "embargo_period"]
    assert replay_command(config, str(letters), io.StringIO()) == 0  # found: not created again
    assert len(jobs_of(scicat_standin, PID)) == 2


# ---- the stand-in's job look-ups --------------------------------------------------------------


@pytest.mark.integration
def test_standin_lists_v3_and_v4_jobs_in_either_shape_by_dataset_and_type(
    scicat_standin: SciCatStandIn,
) -> None:
    assert call(scicat_standin, "POST", "v4/datasets", V4_DATASET).status_code == 201
    datasets = [{"pid": V4_PID, "files": []}]
    v4_body = {"type": "archive", "ownerUser": "ingestor", "jobParams": {"datasetList": datasets}}
    v3_body = {"type": "embargo_period", "ownerGroup": "g", "datasetList": datasets}
    assert call(scicat_standin, "POST", "v4/jobs", v4_body).status_code == 201
    v3_answer = call(scicat_standin, "POST", "v3/jobs", v3_body)
    assert (v3_answer.status_code, v3_answer.json()["ownerGroup"]) == (201, "g")

    def found(version: str, key: str, **where: Any) -> list[tuple[str, Any]]:
        params = {"filter": json.dumps({"where": {key: V4_PID, **where}})}
        answer = call(scicat_standin, "GET", f"{version}/jobs", params=params)
        return sorted(
            (job["type"], job.get("statusCode", job.get("jobStatusMessage")))
            for job in answer.json()
        )

    both = [("archive", "jobSubmitted"), ("embargo_period", "jobSubmitted")]
    assert found("v4", "jobParams.datasetList.pid") == both
    assert found("v3", "datasetList.pid") == both
    assert found("v4", "jobParams.datasetList.pid", type="embargo_period") == both[1:]
    assert found("v3", "datasetList.pid", type="archive") == both[:1]
    assert found("v3", "jobParams.datasetList.pid") == []  # v3's shape has no such field
