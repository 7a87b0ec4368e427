"""One run-start (``pl72``) message → the run's sample in SciCat, once.

The ESS system runs a second daemon for this (upstream spec §5); here it is a second kind of job in
the same daemon, with the same delivery rules as files: the message is committed only when the
sample exists, a file that is not there or not readable yet is retried on the file-open schedule
and then dead-lettered, a SciCat outage is retried for as long as it lasts.

A sample is identified by its name (``description``, as upstream stores it) and its proposal: when
SciCat already has one with both, nothing is created. Otherwise the POST carries a ``sampleId``
derived from proposal and name, so two runs of one sample that race past the lookup cannot create
two samples. The second POST is refused, with 500 by the real backends (4.5 and 5: a duplicate key)
or 409, so after either the sample is looked up by its ``sampleId``: found, it counts as
``Existed``. ``ownerGroup`` and ``accessGroups`` are the proposal id, as upstream (the proposal's
group owns its data at ESS).

Backend 5 requires ``sampleName`` (without it: 500), 4.5 refuses it as an unknown field (400): the
body carries it, and after a 400 naming it the ingestor creates samples without it from then on.
"""

from __future__ import annotations

import logging
import threading
import uuid
from dataclasses import dataclass
from typing import Any

from scicat_ingestor.config.model import IngestorConfig
from scicat_ingestor.ingest.attempt import Attempted, Refused, Reporting, attempt
from scicat_ingestor.ingest.files import require_regular_file, resolve_in_roots
from scicat_ingestor.ingest.outcome import Created, DryRun, Existed, Outcome, outcome_label
from scicat_ingestor.ingest.pipeline import Job
from scicat_ingestor.ops.metrics import SAMPLE_SECONDS
from scicat_ingestor.schema.nexus import open_nexus
from scicat_ingestor.scicat import (
    SciCatAuthRefused,
    SciCatClient,
    SciCatConflict,
    SciCatError,
    SciCatRejected,
    SciCatUnavailable,
)

logger = logging.getLogger("scicat_ingestor.samples")

_SAMPLE_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://scicatproject.github.io/sample")


@dataclass(frozen=True)
class SampleJob(Job):
    """Create the sample of the run whose file is ``file_path`` (from a ``pl72`` message).

    A ``Job`` so the daemon tracks, retries and dead-letters it like a file; its own type so the
    daemon hands it to the ``SampleIngestor`` instead of the dataset pipeline.
    """


@dataclass(frozen=True)
class SampleInfo:
    """What the run's file says about its sample."""

    name: str
    proposal_id: str


def sample_id(info: SampleInfo) -> str:
    """A stable id per (proposal, name): a repeated or racing POST is refused instead of a twin."""
    return str(uuid.uuid5(_SAMPLE_NAMESPACE, f"{info.proposal_id}\x00{info.name}"))


def sample_body(info: SampleInfo) -> dict[str, Any]:
    """The ``CreateSampleDto`` upstream sends, plus the stable ``sampleId`` and (backend 5)
    ``sampleName``."""
    return {
        "sampleId": sample_id(info),
        "sampleName": info.name,
        "ownerGroup": info.proposal_id,
        "accessGroups": [info.proposal_id],
        "description": info.name,
        "proposalId": info.proposal_id,
        "isPublished": False,
    }


def sample_filter(info: SampleInfo) -> dict[str, str]:
    """The ``where`` of the lookup; the dataset pipeline's ``sample_attachment`` uses the same."""
    return {"description": info.name, "proposalId": info.proposal_id}


class SampleIngestor:
    """Creates one run's sample per ``ingest`` call; thread-safe (share one between workers)."""

    def __init__(self, config: IngestorConfig, client: SciCatClient) -> None:
        ingestion = config.ingestion
        self._fh = ingestion.file_handling
        self._name_path = ingestion.sample_name_path
        self._proposal_path = ingestion.sample_proposal_id_path
        self._dry_run = ingestion.dry_run
        self._client = client
        self._lock = threading.Lock()
        self._names = True  # False once SciCat refused ``sampleName`` (backend 4.x)

    def ingest(self, job: Job) -> Outcome:
        """One attempt; logs one line with the outcome and its duration."""
        return attempt(_REPORTING, job.job_id, job.file_path, lambda: self._run(job))

    def _run(self, job: Job) -> Outcome:
        info = self.read(job.file_path)
        found = self._client.find_samples(sample_filter(info))
        if found:
            return Existed(str(found[0].get("sampleId") or ""))
        body = sample_body(info)
        if self._dry_run:
            return DryRun(body["sampleId"])
        try:
            created = self._create(body)
        except (SciCatConflict, SciCatUnavailable) as err:
            if not _maybe_duplicate(err):
                raise
            if not self._client.find_samples({"sampleId": body["sampleId"]}):
                raise
            logger.info("Sample %s was created meanwhile (%s)", body["sampleId"], err.status)
            return Existed(body["sampleId"])
        return Created(str(created.get("sampleId") or body["sampleId"]))

    def _create(self, body: dict[str, Any]) -> dict[str, Any]:
        """POST the sample; without ``sampleName`` once SciCat has refused it as unknown."""
        with self._lock:
            names = self._names
        if not names:
            body = _without_name(body)
        try:
            return self._client.create_sample(body)
        except SciCatRejected as err:
            if not names or err.status != 400 or "sampleName" not in err.message:
                raise
        with self._lock:
            if self._names:
                logger.info(
                    "SciCat refuses sampleName (backend 4.x): samples are created without it"
                )
            self._names = False
        return self._client.create_sample(_without_name(body))

    def read(self, file_path: str) -> SampleInfo:
        """Sample name and proposal from the run's file (``FileNotReady`` while it is not there)."""
        real = resolve_in_roots(file_path, self._fh.data_roots)
        require_regular_file(real)
        with open_nexus(real, self._fh.max_read_bytes) as reader:
            name = reader.read_text(self._name_path).strip()
            proposal = reader.read_text(self._proposal_path).strip()
        if not name or not proposal:
            path = self._name_path if not name else self._proposal_path
            raise Refused(f"{file_path}: {path} is empty, so the run has no sample to create")
        return SampleInfo(name, proposal)


def _sample_line(done: Attempted) -> str:
    """``sample of <file>: <outcome> (job <id>, sample <id>) in <seconds> s[: <reason>]``."""
    because = f": {done.reason}" if done.reason else ""
    return (
        f"sample of {done.file}: {outcome_label(done.outcome)} (job {done.job_id or '-'}, "
        f"sample {done.pid or '-'}) in {done.seconds:.3f} s{because}"
    )


_REPORTING = Reporting(logger, SAMPLE_SECONDS, _sample_line)


def _maybe_duplicate(err: SciCatError) -> bool:
    """409, or the 500 the real backends answer a duplicate ``sampleId`` with."""
    return isinstance(err, SciCatConflict) or (
        err.status == 500 and not isinstance(err, SciCatAuthRefused)
    )


def _without_name(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k != "sampleName"}
