"""Prometheus metrics, in one registry so /metrics shows exactly the ingestor's own series.

Metric objects are module-level so that the module where an event happens can count it without
passing a metrics object through every call. Label values are bounded sets (topic, kind,
outcome, endpoint, status): never a file name, pid or secret.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

_ATTEMPT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

MESSAGES = Counter(
    "scicat_ingestor_messages",
    "Kafka messages consumed, by topic and triage kind (wrdn, skip, poison).",
    ["topic", "kind"],
    registry=REGISTRY,
)
FILES = Counter(
    "scicat_ingestor_files",
    "Files finished, by outcome "
    "(created, existed, dry_run, skipped, dead_lettered, failed_permanent).",
    ["outcome"],
    registry=REGISTRY,
)
SAMPLES = Counter(
    "scicat_ingestor_samples",
    "Run-start (pl72) messages finished, by outcome (created, existed, dry_run, dead_lettered, "
    "failed_permanent).",
    ["outcome"],
    registry=REGISTRY,
)
RETRIES = Counter(
    "scicat_ingestor_retries",
    "Ingestion attempts rescheduled after a transient failure, by cause "
    "(file, scicat, scicat-auth).",
    ["cause"],
    registry=REGISTRY,
)
IN_FLIGHT = Gauge(
    "scicat_ingestor_in_flight",
    "Files accepted from Kafka and not yet finished (running, queued or waiting to retry).",
    registry=REGISTRY,
)
PAUSED = Gauge(
    "scicat_ingestor_paused",
    "1 while consumption is paused for backpressure, else 0.",
    registry=REGISTRY,
)
INGEST_SECONDS = Histogram(
    "scicat_ingestor_ingest_duration_seconds",
    "Time to ingest one file (one attempt), from start of work to the last SciCat answer.",
    buckets=_ATTEMPT_BUCKETS,
    registry=REGISTRY,
)
SAMPLE_SECONDS = Histogram(
    "scicat_ingestor_sample_duration_seconds",
    "Time to create one run's sample (one attempt), from start of work to the last SciCat answer.",
    buckets=_ATTEMPT_BUCKETS,
    registry=REGISTRY,
)
SCICAT_REQUEST_SECONDS = Histogram(
    "scicat_ingestor_scicat_request_duration_seconds",
    "SciCat HTTP request time, by endpoint name and status code ('error' when no response).",
    ["endpoint", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
SCICAT_REQUESTS = Counter(
    "scicat_ingestor_scicat_requests",
    "SciCat requests, by method, endpoint (the route, e.g. datasets/{pid}/origdatablocks) and "
    "status code ('error' when no response); one per request, however often urllib3 retried it.",
    ["method", "endpoint", "status"],
    registry=REGISTRY,
)
SCICAT_AUTH_OK = Gauge(
    "scicat_ingestor_scicat_auth_ok",
    "1 while SciCat accepts the ingestor's credentials, 0 during an auth outage.",
    registry=REGISTRY,
)
SCICAT_LOGINS = Counter(
    "scicat_ingestor_scicat_logins",
    "Logins to SciCat (auth/login), by result (ok, refused, error).",
    ["result"],
    registry=REGISTRY,
)
BYTES_HASHED = Counter(
    "scicat_ingestor_bytes_hashed",
    "Bytes read to compute file checksums.",
    registry=REGISTRY,
)
COMMITTED_OFFSET = Gauge(
    "scicat_ingestor_committed_offset",
    "Last offset committed to Kafka, by topic and partition.",
    ["topic", "partition"],
    registry=REGISTRY,
)
CONSUMER_LAG = Gauge(
    "scicat_ingestor_consumer_lag",
    "High watermark minus committed offset, by topic and partition, where the broker reports it.",
    ["topic", "partition"],
    registry=REGISTRY,
)
THUMBNAILS = Counter(
    "scicat_ingestor_thumbnails",
    "Dataset thumbnails, by result: attached, exists, or why none was attached "
    "(no_plot, unsupported, too_large, no_finite_values, unreadable, render_error, "
    "rejected, unavailable, error).",
    ["result"],
    registry=REGISTRY,
)
JOBS = Counter(
    "scicat_ingestor_jobs",
    "SciCat jobs of the schemas' jobs: section (archive, embargo, ...), by job type and "
    "outcome: created, exists (found by the look-up: a redelivery), rejected (4xx: given up), "
    "unavailable (5xx or no answer until the retry bound: given up), invalid (a value could "
    "not be rendered). Given-up jobs are written to the dead-letter file for replay.",
    ["type", "outcome"],
    registry=REGISTRY,
)
DEAD_LETTERS = Counter(
    "scicat_ingestor_dead_letters",
    "Messages written to the dead-letter sink, by sink (kafka, file).",
    ["sink"],
    registry=REGISTRY,
)
DEAD_LETTER_FAILURES = Counter(
    "scicat_ingestor_dead_letter_failures",
    "Dead letters a sink could not store (on a full disk, an unreachable topic), by sink.",
    ["sink"],
    registry=REGISTRY,
)
DEAD_LETTER_SINK_FAILING = Gauge(
    "scicat_ingestor_dead_letter_sink_failing",
    "1 while dead letters cannot be stored (their offsets wait, intake is paused), else 0.",
    registry=REGISTRY,
)
SCHEMA_RELOADS = Counter(
    "scicat_ingestor_schema_reloads",
    "Schema reloads (SIGHUP or a changed file), by result (loaded, failed).",
    ["result"],
    registry=REGISTRY,
)
SCHEMAS_LOADED = Gauge(
    "scicat_ingestor_schemas_loaded",
    "Schema files in the set in use (the fallback not counted).",
    registry=REGISTRY,
)
TURN_HOLD_SECONDS = Histogram(
    "scicat_ingestor_turn_hold_seconds",
    "How long a worker held the turn (ops/turns.py) without a pause: every other worker waited "
    "meanwhile. Long ones are logged with the holder's stack (ingestion.worker_turn_warn_seconds).",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
WATCH_EVENTS = Counter(
    "scicat_ingestor_watch_events",
    "inotify events on matching files in watched directories, by type (created, modified, "
    "closed, moved, deleted, ...).",
    ["type"],
    registry=REGISTRY,
)
WATCH_RESCANS = Counter(
    "scicat_ingestor_watch_rescans",
    "Full rescans of the watched directories (the start-up scan included).",
    registry=REGISTRY,
)
WATCH_FOUND_BY_RESCAN = Counter(
    "scicat_ingestor_watch_found_by_rescan",
    "Finished files that a periodic rescan found and inotify never reported (lost events: "
    "queue overflow, network file systems).",
    registry=REGISTRY,
)
