"""One file, one attempt: NeXus file → schema → variables → payload → SciCat → ``Outcome``.

``Pipeline.ingest`` never raises for a bad file, schema or SciCat answer: every such problem becomes
a ``Permanent`` or ``Transient`` outcome whose reason names the file, field or response at fault.
Retrying (when and how often) is the caller's business: the daemon and ``commands.jobs`` decide.
Once the dataset and its origdatablock exist, the thumbnail and the schema's SciCat jobs
(``scicat_jobs``) follow; neither can change the outcome.

Compared with the ESS ingestor: a dataset whose pid is known is POSTed first, without a GET by
pid, and a 409 means it exists; the file is hashed only after a 201 (a redelivered message costs
two requests, not a full read of the file); the metadata search can be skipped when the pid is
known (``check_if_dataset_exists_by_metadata_when_pid_known``); an existing dataset without an
origdatablock gets one (upstream left it without, forever); the origdatablock points to the pid
SciCat returned; dry runs write nothing; one file is never ingested twice at the same time.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scicat_ingestor.config.model import IngestorConfig
from scicat_ingestor.ingest.attempt import Attempted, Refused, Reporting, attempt, classify
from scicat_ingestor.ingest.files import (
    FileEntry,
    checksum,
    ingestor_directory,
    relative_to_source_folder,
    require_regular_file,
    resolve_in_roots,
    side_file_directory,
    stat_entry,
    write_hash_file,
    write_message_file,
)
from scicat_ingestor.ingest.jobs import DEFAULT_JOB_RETRY, JobRetry, JobSubmitter
from scicat_ingestor.ingest.outcome import (
    Created,
    DryRun,
    Existed,
    Outcome,
    Permanent,
    Transient,
    outcome_label,
)
from scicat_ingestor.ingest.thumbnail import ThumbnailError, thumbnail_of_file
from scicat_ingestor.ops.logcontext import update_context
from scicat_ingestor.ops.metrics import INGEST_SECONDS, JOBS, THUMBNAILS
from scicat_ingestor.ops.turns import TURNS
from scicat_ingestor.schema.jobs import build_jobs
from scicat_ingestor.schema.loader import SchemaSet
from scicat_ingestor.schema.model import MetadataSchema, SampleAttachment
from scicat_ingestor.schema.nexus import FileNotReady, open_nexus
from scicat_ingestor.schema.payload import DatasetDraft, build_dataset
from scicat_ingestor.schema.variables import Builtins, VariableResults, evaluate_variables
from scicat_ingestor.scicat import (
    LookupCache,
    SciCatAuthRefused,
    SciCatClient,
    SciCatConflict,
    SciCatError,
    SciCatUnavailable,
)

logger = logging.getLogger("scicat_ingestor.pipeline")


@dataclass(frozen=True)
class Draft:
    """What one ingestion would send: the selected schema, its variables and the dataset."""

    schema: MetadataSchema
    variables: VariableResults
    dataset: DatasetDraft


@dataclass(frozen=True)
class Job:
    """One file to ingest; ``message`` is the file-writer's message (for ``message_to_file``)."""

    file_path: str
    job_id: str = ""
    message: Mapping[str, Any] | None = None


class _Fetcher:
    """``fetch`` for SC variables that remembers a SciCat outage.

    The schema engine records a failing variable and goes on; an unreachable SciCat must still make
    the attempt transient instead of ending as a "mandatory field missing" rejection.
    """

    def __init__(self, lookups: LookupCache) -> None:
        self._lookups = lookups
        self.unavailable: SciCatUnavailable | None = None

    def __call__(self, url: str) -> Any:
        if self.unavailable is not None:  # fail fast: no second timeout in the same outage
            raise self.unavailable
        try:
            return self._lookups.get(url)
        except SciCatUnavailable as err:
            self.unavailable = self.unavailable or err
            raise


class _OneAtATime:
    """Serialises attempts on the same file: duplicate messages then see 'exists', not a race."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._busy: set[str] = set()

    @contextmanager
    def hold(self, key: str) -> Iterator[None]:
        with self._cond:
            while key in self._busy:
                self._cond.wait()
            self._busy.add(key)
        try:
            yield
        finally:
            with self._cond:
                self._busy.discard(key)
                self._cond.notify_all()


class Pipeline:
    """Ingests one file per ``ingest`` call; thread-safe (share one between workers)."""

    def __init__(
        self,
        config: IngestorConfig,
        schemas: SchemaSet | Callable[[], SchemaSet],
        client: SciCatClient,
        job_retry: JobRetry = DEFAULT_JOB_RETRY,
    ) -> None:
        """``schemas``: a fixed set, or a function giving the current one (a live reload);
        ``job_retry``: how long the schemas' SciCat jobs are retried on server errors."""
        self._config = config
        self._fh = config.ingestion.file_handling
        self._dry_run = config.ingestion.dry_run
        self._schemas = schemas if callable(schemas) else lambda: schemas
        self._client = client
        self._lookups = LookupCache(client.get_json, config.scicat.lookup_cache_seconds)
        self._serial = _OneAtATime()
        self._jobs = JobSubmitter(client, config.ingestion.dead_letter.file, job_retry)

    @property
    def client(self) -> SciCatClient:
        """The SciCat client (for the commands' start-up credentials probe)."""
        return self._client

    def ingest(self, job: Job) -> Outcome:
        """One attempt at ``job``; logs one line with the outcome and its duration."""
        return attempt(_REPORTING, job.job_id, job.file_path, lambda: self._held(job))

    # ----------------------------------------------------------------------------------------

    def draft(
        self, job: Job, fetch: Callable[[str], Any] | None = None
    ) -> Draft | Permanent | Transient:
        """What ``ingest(job)`` would send, computed the same way, writing and creating nothing.

        ``fetch`` replaces the SciCat lookups of SC variables (``validate-schema`` without SciCat);
        the pid seed is the one ``ingest`` uses, so the previewed pid is the one it would send.
        """
        return classify(lambda: self._plan(job, self._locate(job), fetch))

    # ----------------------------------------------------------------------------------------

    def _held(self, job: Job) -> Outcome:
        # the turn (see ops/turns.py) is taken after the per-file hold, which may wait for
        # another attempt on the same file, and given away whenever this attempt waits
        with self._serial.hold(os.path.normpath(job.file_path)), TURNS.hold():
            return self._run(job)

    def _locate(self, job: Job) -> Path:
        """The real path of the job's file, refused outside the data roots or if not a file."""
        real = resolve_in_roots(job.file_path, self._fh.data_roots)
        require_regular_file(real)
        return real

    def _plan(self, job: Job, real: Path, fetch: Callable[[str], Any] | None) -> Draft:
        """Select the schema, evaluate its variables on the file, build the dataset payload."""
        nexus = Path(os.path.normpath(job.file_path))
        schema = self._schema_for(nexus)
        logger.debug("Metadata schema selected: %s (id %s)", schema.name, schema.id)
        fetcher = _Fetcher(self._lookups)
        builtins = Builtins(
            data_file_path=nexus.as_posix(),
            ingestor_files_directory=self._fh.ingestor_files_directory,
        )
        with open_nexus(real, self._fh.max_read_bytes) as reader:
            results = evaluate_variables(schema, reader, builtins, fetch or fetcher)
        if fetcher.unavailable is not None:
            raise fetcher.unavailable
        try:
            seed = _pid_seed(job, real)
        except OSError as err:  # deleted or replaced after it was read
            raise FileNotReady(
                nexus, f"file not found after reading it: {err.strerror or err}"
            ) from err
        return Draft(schema, results, build_dataset(schema, results, self._config.dataset, seed))

    def _run(self, job: Job) -> Outcome:
        real = self._locate(job)
        nexus = Path(os.path.normpath(job.file_path))
        if self._fh.message_to_file and job.message is not None and not self._dry_run:
            self._write_message(nexus, job.message)
        planned = self._plan(job, real, None)
        schema, results, draft = planned.schema, planned.variables, planned.dataset
        if draft.missing_mandatory:
            causes = [f"variable {f.name}: {f.error}" for f in results.failures]
            causes += [f"field {f.machine_name}: {f.error}" for f in draft.failures]
            because = f" (because: {'; '.join(causes)})" if causes else ""
            raise Refused(
                f"{nexus}: schema {schema.id!r} leaves mandatory dataset fields empty: "
                f"{', '.join(draft.missing_mandatory)}{because}"
            )
        payload = dict(draft.payload)
        if payload.get("pid"):
            update_context(dataset_pid=str(payload["pid"]))
        if self._dry_run:
            return self._finish(self._dry_run_outcome(payload, nexus, real), planned, real)
        found = self._found_by_metadata(payload)
        if found is not None:
            return self._finish(self._ensure_datablock(found, payload, nexus, real), planned, real)
        self._check_listable(nexus, payload)
        # SciCat counts the origdatablocks into the dataset: 4.5 sets the sum of its blocks, 5
        # adds each block on top of what the dataset was created with (sent: doubled).
        payload["size"] = payload["numberOfFiles"] = 0
        try:
            created = self._client.create_dataset(payload)
        except SciCatConflict:
            pid = str(payload.get("pid") or "")
            if not pid:
                raise
            # the pid is the file version's: a redelivery (or a racing attempt) created it
            logger.debug("Dataset %s exists (SciCat answered its POST 409)", pid)
            outcome = self._ensure_datablock(pid, payload, nexus, real)
            return self._finish(outcome, planned, real)
        pid = str(created.get("pid") or payload.get("pid") or "")
        if not pid:
            raise Refused(f"{nexus}: SciCat created the dataset but returned no pid")
        update_context(dataset_pid=pid)
        # hashed only now: a redelivered file ends at the 409 above without a read of its data
        entries = self._file_list(nexus, real, payload)
        block = self._client.create_origdatablock(self._datablock(pid, payload, entries))
        created_outcome = Created(pid, str(block.get("_id") or block.get("id") or ""))
        return self._finish(created_outcome, planned, real)

    def _dry_run_outcome(self, payload: Mapping[str, Any], nexus: Path, real: Path) -> Outcome:
        """What a real run would do, found out by reading only: GET by pid, then the search."""
        existing = self._existing_pid(payload)
        if existing is not None:
            return self._ensure_datablock(existing, payload, nexus, real)
        self._check_listable(nexus, payload)
        entries = self._file_list(nexus, real, payload)
        logger.debug(
            "Dry run: would create dataset %s, then its origdatablock of %d file(s), %d bytes",
            payload.get("pid"),
            len(entries),
            _total_size(entries),
        )
        return DryRun(str(payload.get("pid") or ""))

    # ----------------------------------------------------------------------------------------

    def _schema_for(self, nexus: Path) -> MetadataSchema:
        """The schema of this attempt, from the set current now (a reload does not change it)."""
        schema = self._schemas().select(nexus.as_posix())
        if schema is None:
            raise Refused(
                f"{nexus}: no metadata schema matches this file and no fallback schema is "
                "configured (ingestion.fallback_schema_file_path)"
            )
        return self._with_sample_lookup(schema)

    def _with_sample_lookup(self, schema: MetadataSchema) -> MetadataSchema:
        """With sample ingestion on, a schema that neither sets ``sampleId`` nor looks a sample
        up gets the lookup at the configured sample paths: the dataset links the run's sample."""
        ingestion = self._config.ingestion
        if not ingestion.sample_ingestion or schema.sample_attachment.query_sample_name:
            return schema
        if any(item.machine_name == "sampleId" for item in schema.fields):
            return schema
        lookup = SampleAttachment(
            True, ingestion.sample_name_path, ingestion.sample_proposal_id_path
        )
        return dataclasses.replace(schema, sample_attachment=lookup)

    def _existing_pid(self, payload: Mapping[str, Any]) -> str | None:
        """The pid of this dataset if SciCat has it already, asked without writing (a dry run):
        by pid, then by metadata key."""
        pid = str(payload.get("pid") or "")
        by_pid = pid and self._config.ingestion.check_if_dataset_exists_by_pid
        if by_pid and self._client.get_dataset(pid) is not None:
            return pid
        return self._found_by_metadata(payload)

    def _found_by_metadata(self, payload: Mapping[str, Any]) -> str | None:
        """The pid of a dataset with this file's ``scientificMetadata.<key>.value``, if the search
        is configured and adds something: it finds datasets another tool created, or ones whose
        pid SciCat assigned. A pid of our own would meet 409 on its POST anyway, so
        ``check_if_dataset_exists_by_metadata_when_pid_known: false`` skips the search then
        (it scans SciCat's datasets: no index behind it)."""
        ingestion = self._config.ingestion
        if not ingestion.check_if_dataset_exists_by_metadata:
            return None
        if payload.get("pid") and not ingestion.check_if_dataset_exists_by_metadata_when_pid_known:
            return None
        key = ingestion.check_if_dataset_exists_by_metadata_key
        item = (payload.get("scientificMetadata") or {}).get(key)
        value = item.get("value") if isinstance(item, Mapping) else None
        if value is None:
            return None
        where = {f"scientificMetadata.{key}.value": value}
        found = self._client.find_datasets(where, fields=("pid",), limit=1)
        # upstream took any 200, even [], as "exists"
        found_pid = found[0].get("pid") if found else None
        return str(found_pid) if found_pid else None

    def _check_listable(self, nexus: Path, payload: Mapping[str, Any]) -> None:
        """Refuse, before the dataset is created, a file list SciCat could not take (a listed
        file outside ``sourceFolder``): checked on the paths alone, without reading the file."""
        fh = self._fh
        paths = [Path(os.path.abspath(nexus))]
        if fh.save_file_hash and fh.compute_file_hash:
            # where the hash file will go (its folder decides), named but neither created nor
            # claimed: ``side_file_path`` would claim the name before the dataset exists
            side = side_file_directory(fh, nexus)
            name = f"{nexus.stem}.{fh.hash_file_extension.lstrip('.')}"
            paths.append(Path(os.path.abspath(side)) / name)
        entries = [FileEntry(p.as_posix(), None, "", None, None, None, None) for p in paths]
        try:
            relative_to_source_folder(entries, str(payload.get("sourceFolder")), fh.file_path_type)
        except ValueError as err:
            raise Refused(f"{nexus}: {err}") from err

    def _ensure_datablock(
        self, pid: str, payload: Mapping[str, Any], nexus: Path, real: Path
    ) -> Outcome:
        """An existing dataset: add its origdatablock if an earlier attempt stopped before it."""
        update_context(dataset_pid=pid)
        if self._client.origdatablocks_of(pid):
            logger.debug("Dataset %s already in SciCat with its origdatablock", pid)
            return Existed(pid)
        if self._dry_run:
            logger.info("Dry run: dataset %s exists without origdatablock; would add it", pid)
            return Existed(pid)
        logger.warning("Dataset %s exists without an origdatablock: adding it", pid)
        entries = self._file_list(nexus, real, payload)
        self._client.create_origdatablock(self._datablock(pid, payload, entries))
        return Existed(pid, repaired=True)

    def _file_list(self, nexus: Path, real: Path, payload: Mapping[str, Any]) -> list[FileEntry]:
        """The NeXus file (stats, checksum) plus the hash side-file, with SciCat's path form."""
        fh = self._fh
        try:
            chk = (
                checksum(real, fh.file_hash_algorithm, fh.hash_chunk_bytes)
                if fh.compute_file_hash
                else None
            )
            entries = [stat_entry(nexus, fh.compute_file_stats, chk)]
        except OSError as err:
            raise FileNotReady(
                nexus, f"cannot read for the file list: {err.strerror or err}"
            ) from err
        # Upstream raised when asked to save a hash it had not computed: nothing to save then.
        if fh.save_file_hash and chk is not None and not self._dry_run:
            try:
                directory = ingestor_directory(fh, nexus)
                side = write_hash_file(directory, nexus, chk, fh.hash_file_extension)
                entries.append(stat_entry(side, fh.compute_file_stats, None))
            except OSError as err:
                raise Refused(f"{nexus}: cannot write the hash file: {err}") from err
        source_folder = payload.get("sourceFolder")
        try:
            return relative_to_source_folder(entries, str(source_folder), fh.file_path_type)
        except ValueError as err:
            raise Refused(f"{nexus}: {err}") from err

    def _datablock(
        self, pid: str, payload: Mapping[str, Any], entries: list[FileEntry]
    ) -> dict[str, Any]:
        """``CreateOrigDatablockDto``: only fields SciCat accepts, no nulls."""
        body = {
            "datasetId": pid,
            "size": _total_size(entries),
            "chkAlg": self._fh.file_hash_algorithm,
            "dataFileList": [e.to_dto() for e in entries],
            "ownerGroup": payload.get("ownerGroup"),
            "accessGroups": payload.get("accessGroups"),
        }
        return {k: v for k, v in body.items() if v is not None}

    def _finish(self, outcome: Outcome, planned: Draft, real: Path) -> Outcome:
        """What follows a dataset with its origdatablock: the thumbnail, then the schema's jobs
        (an archive job then sees the whole dataset). Neither changes ``outcome``."""
        payload = planned.dataset.payload
        outcome = self._with_thumbnail(outcome, planned.schema, payload, real)
        return self._with_jobs(outcome, planned, real)

    # ---- jobs (the schema's jobs: section) ------------------------------------------------

    def _with_jobs(self, outcome: Outcome, planned: Draft, real: Path) -> Outcome:
        """Create the schema's jobs for a dataset that exists now; a dry run logs their bodies.
        Whatever happens, ``outcome`` stands: the dataset is in SciCat."""
        schema = planned.schema
        if not schema.jobs or not isinstance(outcome, Created | Existed | DryRun):
            return outcome
        # a dry run without a pid of its own: SciCat would assign one
        drafts, failures = build_jobs(schema, planned.variables, outcome.pid or "<pid>")
        if self._dry_run:
            for draft in drafts:
                body = json.dumps(draft.body, ensure_ascii=False, default=str)
                logger.info("Dry run: would create job %s: %s", draft.name, body)
            for failure in failures:
                logger.warning("Dry run: job %s not renderable: %s", failure.name, failure.error)
            return outcome
        try:
            self._jobs.submit_all(drafts, failures, str(real))
        except Exception:  # a job must never cost a dataset
            JOBS.labels("", "error").inc()
            logger.warning("%s: jobs of dataset %s not created", real, outcome.pid, exc_info=True)
        return outcome

    # ---- thumbnail ------------------------------------------------------------------------

    def _with_thumbnail(
        self, outcome: Outcome, schema: MetadataSchema, payload: Mapping[str, Any], real: Path
    ) -> Outcome:
        """Attach a picture to a dataset that exists now; whatever happens, ``outcome`` stands."""
        options = self._config.ingestion.thumbnail
        if options.enabled and not self._dry_run and isinstance(outcome, Created | Existed):
            try:
                result = self._attach_thumbnail(outcome.pid, schema, payload, real)
            except (ThumbnailError, SciCatError) as err:
                result = _thumbnail_failure(err)
                logger.warning(
                    "%s: no thumbnail for dataset %s (%s): %s", real, outcome.pid, result, err
                )
            except Exception:  # a thumbnail must never cost a dataset
                result = "error"
                logger.warning("%s: no thumbnail for dataset %s", real, outcome.pid, exc_info=True)
            THUMBNAILS.labels(result).inc()
        return outcome

    def _attach_thumbnail(
        self, pid: str, schema: MetadataSchema, payload: Mapping[str, Any], real: Path
    ) -> str:
        """``attached``, or ``exists`` when the dataset has an attachment already (redelivery)."""
        if self._client.attachments_of(pid):
            logger.debug("Dataset %s has an attachment already: no thumbnail added", pid)
            return "exists"
        thumb = thumbnail_of_file(
            real, self._config.ingestion.thumbnail.max_points, schema.thumbnail
        )
        body = {
            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"scicat-ingestor:thumbnail:{pid}")),
            "datasetId": pid,
            "caption": thumb.caption,
            "thumbnail": thumb.data_uri(),
            "ownerGroup": payload.get("ownerGroup"),
            "accessGroups": payload.get("accessGroups"),
        }
        result = self._post_thumbnail(pid, {k: v for k, v in body.items() if v is not None})
        if result != "attached":
            return result
        logger.info(
            "Thumbnail attached to dataset %s: %s (%d bytes PNG, %d values read)",
            pid,
            thumb.caption,
            len(thumb.png),
            thumb.values_read,
        )
        return "attached"

    def _post_thumbnail(self, pid: str, body: Mapping[str, Any]) -> str:
        """POST the attachment; after an answer that leaves open whether SciCat stored it
        (timeout, reset, 5xx), look again and post a second time only if it is not there.

        The id we send does not make the POST idempotent: the real v3 routes (4.5 and 5) store
        every POST under an id of their own, so the look-up is what prevents a second picture.
        """
        try:
            return self._post_attachment(pid, body)
        except SciCatAuthRefused:
            raise
        except SciCatUnavailable as err:
            if self._client.attachments_of(pid):
                logger.info("Thumbnail of dataset %s stored though its POST failed (%s)", pid, err)
                return "attached"
            logger.info("Thumbnail of dataset %s not stored (%s): posting it again", pid, err)
        return self._post_attachment(pid, body)

    def _post_attachment(self, pid: str, body: Mapping[str, Any]) -> str:
        try:
            self._client.create_attachment(pid, body)
        except SciCatConflict:  # a concurrent attempt attached the same id first
            return "exists"
        return "attached"

    def _write_message(self, nexus: Path, message: Mapping[str, Any]) -> None:
        """Keep the file-writer's message next to the data, for diagnosis; failure only warns."""
        try:
            directory = ingestor_directory(self._fh, nexus)
            write_message_file(directory, nexus, message, self._fh.message_file_extension)
        except OSError as err:
            logger.warning("%s: cannot write the message file: %s", nexus, err)


def _file_line(done: Attempted) -> str:
    """``<file>: <outcome>[, dataset <pid>], <seconds> s[: <reason>]`` (each fact once: the text
    format adds the job id from the context, JSON adds all)."""
    dataset = f", dataset {done.pid}" if done.pid else ""
    # the reason without the path in front: the line starts with it
    reason = done.reason.removeprefix(f"{done.file}: ")
    because = f": {reason}" if reason else ""
    return f"{done.file}: {outcome_label(done.outcome)}{dataset}, {done.seconds:.3f} s{because}"


_REPORTING = Reporting(logger, INGEST_SECONDS, _file_line, pid_field="dataset_pid")


def _thumbnail_failure(err: ThumbnailError | SciCatError) -> str:
    """The metric label of a missing thumbnail."""
    if isinstance(err, ThumbnailError):
        return err.reason
    return "unavailable" if isinstance(err, SciCatUnavailable) else "rejected"


def _total_size(entries: list[FileEntry]) -> int:
    return sum(e.size for e in entries if e.size is not None)


def _pid_seed(job: Job, real: Path) -> str:
    """Identifies one version of one file: the same message redelivered gives the same seed."""
    st = real.stat()
    return f"{job.job_id}|{real}|{st.st_mtime_ns}|{st.st_size}"
