"""SciCat jobs in tests: the ESS example schema with jobs, a second job for it, and the jobs the
stand-in holds for a dataset."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import requests

from scicat_ingestor.testing.scicat import SciCatStandIn

EXAMPLE = Path(__file__).parents[1] / "data" / "schemas-jobs" / "small-coda.imsc.yml"
# A second job for EXAMPLE's ``jobs:`` section (inserted after its first line).
ARCHIVE = """\
  archive:
    type: archive
    job_params: {datasetList: [{pid: <pid>, files: []}]}
    owner_user: ingestor
    contact_email: <pi_email>
"""


def jobs_of(standin: SciCatStandIn, pid: str) -> list[dict[str, Any]]:
    """The jobs of one dataset as API v4 lists them (``type`` order)."""
    where = {"jobParams.datasetList.pid": pid}
    answer = requests.get(
        f"{standin.api_url}/v4/jobs",
        params={"filter": json.dumps({"where": where})},
        headers={"Authorization": f"Bearer {standin.token}"},
        timeout=5,
    )
    answer.raise_for_status()
    return sorted(answer.json(), key=lambda job: str(job["type"]))
