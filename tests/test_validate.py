"""``validate-schema --nexus-file`` previews through the pipeline: the pid and payload it shows
are the ones an ingestion sends (real SciCat stand-in, real file)."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import pytest
import yaml

from scicat_ingestor.commands.validate import validate_schema
from scicat_ingestor.config.model import IngestorConfig, build
from scicat_ingestor.ingest.outcome import Created
from scicat_ingestor.ingest.pipeline import Job, Pipeline
from scicat_ingestor.schema.loader import load_schemas
from scicat_ingestor.scicat import SciCatClient
from scicat_ingestor.testing.scicat import SciCatStandIn


def _preview(config: IngestorConfig, nexus: Path, job_id: str) -> dict[str, object]:
    out = io.StringIO()
    code = validate_schema(config, [], str(nexus), out, ask_scicat=True, job_id=job_id)
    text = out.getvalue()
    assert code == 0, text
    payload = text.split("\nDataset payload (")[1].split("\n", 1)[1]
    loaded = yaml.safe_load("\n".join(line[2:] for line in payload.splitlines()))
    assert isinstance(loaded, dict)
    return loaded


@pytest.mark.integration
def test_fix_preview_pid_and_payload_are_what_ingest_sends(
    tmp_path: Path, data_dir: Path, scicat_standin: SciCatStandIn
) -> None:
    """The preview built its payload without the pid seed, so a generated pid differed. The
    preview shows the v3 body (it asks no SciCat which API it serves): v3 is pinned to compare."""
    schemas = tmp_path / "schemas"
    schemas.mkdir()
    shutil.copy(data_dir / "schemas" / "small-coda.imsc.yml", schemas)
    nexus = tmp_path / "data" / "coda" / "raw" / "small-coda.hdf"
    nexus.parent.mkdir(parents=True)
    shutil.copy(data_dir / "small-coda.hdf", nexus)
    data = {
        "scicat": {
            "host": scicat_standin.url,
            "token": scicat_standin.token,
            "timeout": 2,
            "api_version": 3,
        },
        "dataset": {"generate_dataset_pid": True},
        "ingestion": {
            "schemas_directory": str(schemas),
            "check_if_dataset_exists_by_metadata": False,
            "file_handling": {"data_directory": str(tmp_path / "data")},
        },
    }
    config = build(IngestorConfig, data, "test")
    preview = _preview(config, nexus, "job-7")
    client = SciCatClient(config.scicat)
    try:
        outcome = Pipeline(config, load_schemas(schemas, ""), client).ingest(
            Job(str(nexus), "job-7")
        )
    finally:
        client.close()
    assert isinstance(outcome, Created)
    assert preview["pid"] == outcome.pid
    sent = scicat_standin.datasets[outcome.pid]
    # everything but the time of the run ("now") is sent as previewed
    assert {k: v for k, v in preview.items() if k != "creationTime"} == {
        k: sent[k] for k in preview if k != "creationTime"
    }
