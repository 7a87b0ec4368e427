"""The ``run`` subcommand: wire schemas, SciCat client, dead-letter sinks, health endpoint and the
Kafka source into a ``Daemon``, and turn SIGTERM/SIGINT into a drain."""

from __future__ import annotations

import logging
import os
import signal
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from scicat_ingestor.config.model import ConfigError, IngestorConfig
from scicat_ingestor.daemon.deadletters import DeadLetterError, DeadLetters
from scicat_ingestor.daemon.loop import Daemon
from scicat_ingestor.ingest.pipeline import Pipeline
from scicat_ingestor.ingest.samples import SampleIngestor
from scicat_ingestor.ops.exitcodes import EXIT_FAILURE, EXIT_USAGE
from scicat_ingestor.ops.health import HealthServer, HealthServerError
from scicat_ingestor.ops.probe import PublishedUrl, publish_health_url
from scicat_ingestor.ops.state import ServiceState
from scicat_ingestor.ops.status import SourceInfo, StatusRecorder
from scicat_ingestor.ops.turns import TURNS
from scicat_ingestor.schema.loader import SchemaError
from scicat_ingestor.schema.registry import SchemaRegistry, reload_on_sighup
from scicat_ingestor.scicat import SciCatClient
from scicat_ingestor.sources.base import Source, SourceError
from scicat_ingestor.sources.kafka import KafkaSource
from scicat_ingestor.sources.watch import WatchSource

logger = logging.getLogger("scicat_ingestor.daemon")


@contextmanager
def _signal_handlers(daemon: Daemon) -> Iterator[None]:
    """SIGTERM/SIGINT drain and stop; a second one exits at once (work is redelivered later)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_signal(signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if daemon.stop_requested:
            os.write(2, f"{name} again: exiting now without draining\n".encode())
            os._exit(128 + signum)
        daemon.request_stop(f"received {name}")

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_daemon(config: IngestorConfig) -> int:
    """The ``run`` subcommand: 0 after a clean stop, 1 on a fatal runtime error, 2 on bad config."""
    ingestion = config.ingestion
    state = ServiceState()
    try:
        registry = SchemaRegistry(
            ingestion.schemas_directory,
            ingestion.fallback_schema_file_path,
            state,
            ingestion.schema_reload_interval,
        )
    except SchemaError as exc:
        logger.error("%s", exc)
        return EXIT_USAGE
    loaded = registry.current()
    if not loaded.schemas and loaded.fallback is None:
        # Every file would be dead-lettered while /ready said ready.
        logger.error(
            "ingestion.schemas_directory: no schema files in %s and no "
            "ingestion.fallback_schema_file_path: nothing could be ingested",
            ingestion.schemas_directory,
        )
        return EXIT_USAGE
    client = SciCatClient(config.scicat)
    health: HealthServer | None = None
    published: PublishedUrl | None = None
    dead_letters: DeadLetters | None = None
    try:
        pipeline = Pipeline(config, registry.current, client)  # each attempt: the current set
        samples = SampleIngestor(config, client) if ingestion.sample_ingestion else None
        dead_letters = DeadLetters.from_config(ingestion.dead_letter, config.kafka)
        # watchdog >= 7 warns, from its dispatcher thread, each time it re-registers a directory
        # deleted and re-created: harmless, but printed raw on stderr, one per directory.
        # The program's policy, set here once: the watch source itself leaves the filters alone.
        warnings.filterwarnings(
            "ignore", message="Callback with id", category=RuntimeWarning, module="watchdog"
        )
        source: Source = (
            WatchSource(config.watch, state)
            if ingestion.trigger == "watch"
            else KafkaSource(config.kafka, state)
        )
        recorder = StatusRecorder()
        daemon = Daemon(
            config, pipeline, dead_letters, source, state, samples=samples, recorder=recorder
        )
        if config.health_check.enabled:
            data_roots = ingestion.file_handling.data_roots
            health = HealthServer(
                config.health_check,
                state,
                client.healthy,
                data_roots,
                credentials=client.credentials,
                recorder=recorder,
                source=SourceInfo(
                    ingestion.trigger, config.kafka.topics, config.scicat.frontend_url or ""
                ),
            ).start()
        published = publish_health_url(health.url if health is not None else None)  # for ops.probe
        # Start-up probe, beside the start (never delaying it or the signal handlers): one line
        # if SciCat refuses the credentials; files then wait and /ready says why.
        threading.Thread(target=client.check_credentials, name="scicat-probe", daemon=True).start()
        turns = TURNS.configured(
            enabled=ingestion.worker_turns, warn_after=ingestion.worker_turn_warn_seconds
        )
        with _signal_handlers(daemon), reload_on_sighup(registry.start()), turns:
            status = daemon.run()
    except (ConfigError, SourceError, DeadLetterError) as exc:
        logger.error("%s", exc)
        return EXIT_USAGE
    except HealthServerError as exc:
        logger.error("%s", exc)
        return EXIT_FAILURE
    finally:
        registry.stop()
        if health is not None:
            health.stop()
        if published is not None:
            published.remove()
        if dead_letters is not None:
            dead_letters.close()
        client.close()
    if daemon.busy_workers:
        # Worker threads would keep the interpreter alive past the grace period; their messages
        # were not committed and will be redelivered.
        logger.warning(
            "%d ingestion(s) still running after the grace period; exiting anyway",
            daemon.busy_workers,
        )
        logging.shutdown()
        os._exit(status)
    return status
