"""The Kafka side of the daemon: the only module that touches ``confluent_kafka.Consumer``.

Offsets are committed explicitly by the daemon after ingestion (never by librdkafka at poll time,
which lost messages upstream), so auto-commit and auto offset-store are forced off whatever the
config says.
All methods must be called from the poll thread; rebalance callbacks run inside ``poll()`` on that
thread and are forwarded to a ``RebalanceListener``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from typing import Any

import confluent_kafka
from confluent_kafka import KafkaError, KafkaException

from scicat_ingestor.config.model import KafkaOptions
from scicat_ingestor.config.redact import masked_settings
from scicat_ingestor.ops import metrics
from scicat_ingestor.ops.state import ServiceState
from scicat_ingestor.sources.base import RebalanceListener, Record, SourceError
from scicat_ingestor.sources.offsets import TopicPartition

logger = logging.getLogger("scicat_ingestor.source")
_librdkafka = logging.getLogger("scicat_ingestor.librdkafka")

# Consumer settings the daemon depends on; a config asking otherwise is overridden with a warning.
FORCED_SETTINGS: dict[str, Any] = {"enable.auto.commit": False, "enable.auto.offset.store": False}
_DEFAULT_STATISTICS_INTERVAL_MS = 5000
_ERROR_LOG_INTERVAL = 30.0
_STARTUP_METADATA_TIMEOUT = 10.0
_COMMIT_ERROR_IGNORED = {KafkaError._NO_OFFSET}
_RECONNECT_BACKOFF_MS = 1000


def client_settings(options: KafkaOptions) -> dict[str, Any]:
    """Connection and security settings shared by the consumer and the dead-letter producer.

    Keys follow the ESS ingestor (``group_id`` → ``group.id``); empty strings are dropped so that
    librdkafka defaults apply.
    """
    settings: dict[str, Any] = {
        "bootstrap.servers": options.bootstrap_servers,
        "security.protocol": options.security_protocol,
        "sasl.mechanism": options.sasl_mechanism,
        "sasl.username": options.sasl_username,
        "sasl.password": options.sasl_password.value,
        "ssl.ca.location": options.ssl_ca_location,
        # librdkafka's 100 ms does not grow on refused connections or failed SASL/TLS handshakes
        # (measured: ~19 and ~3 attempts/s against Apache Kafka); 1 s keeps an outage quiet.
        "reconnect.backoff.ms": _RECONNECT_BACKOFF_MS,
    }
    if not options.security_protocol.lower().startswith("sasl"):
        for key in ("sasl.mechanism", "sasl.username", "sasl.password"):
            settings.pop(key)
    if not options.security_protocol.lower().endswith("ssl"):
        settings.pop("ssl.ca.location")
    return {key: value for key, value in settings.items() if value != ""}


def consumer_settings(options: KafkaOptions) -> dict[str, Any]:
    """The librdkafka consumer configuration (``consumer_config`` merged last, then forced keys)."""
    settings = client_settings(options)
    settings["group.id"] = options.group_id
    if options.group_instance_id:
        settings["group.instance.id"] = options.group_instance_id
    settings["auto.offset.reset"] = options.auto_offset_reset
    settings["statistics.interval.ms"] = _DEFAULT_STATISTICS_INTERVAL_MS
    settings.update(options.consumer_config)
    for key, forced in FORCED_SETTINGS.items():
        asked = settings.get(key, forced)
        if _truthy(asked) != forced:
            logger.warning(
                "kafka.consumer_config sets %s=%s; overridden to %s (offsets are committed only "
                "after ingestion finished)",
                key,
                asked,
                str(forced).lower(),
            )
        settings[key] = forced
    return {key: value for key, value in settings.items() if value != ""}


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in {"true", "1", "yes", "on"}
    return bool(value)


class LibrdkafkaLog:
    """librdkafka's own lines (``%5|...|REQTMOUT|``) through ``logging``: our format, sinks and
    redaction instead of raw stderr. At most WARNING: the failures among them also reach the
    error callback, which reports them (rate-limited) as the daemon's own warnings."""

    def log(self, level: int, message: str, *args: object) -> None:
        _librdkafka.log(min(level, logging.WARNING), message, *args)


class KafkaSource:
    """Subscribed consumer with pause/resume of the whole assignment and explicit commits."""

    def __init__(self, options: KafkaOptions, state: ServiceState) -> None:
        self._options = options
        self._listener: RebalanceListener | None = None
        self._state = state
        self._paused = False
        self._last_error_log: dict[int, float] = {}
        settings = consumer_settings(options)
        self._cooperative = "cooperative" in str(settings.get("partition.assignment.strategy", ""))
        logger.info("connecting to Kafka with %s", masked_settings(settings))
        settings["error_cb"] = self._on_error
        settings["stats_cb"] = self._on_stats
        settings["logger"] = LibrdkafkaLog()
        try:
            self._consumer = confluent_kafka.Consumer(settings)
        except KafkaException as exc:
            raise SourceError(f"invalid Kafka consumer configuration: {exc.args[0]}") from None

    def start(self, listener: RebalanceListener) -> None:
        """Check the broker answers (fatal otherwise, as upstream) and subscribe to the topics."""
        self._listener = listener
        try:
            metadata = self._consumer.list_topics(timeout=_STARTUP_METADATA_TIMEOUT)
        except KafkaException as exc:
            raise SourceError(
                f"cannot reach Kafka at {self._options.bootstrap_servers}: {exc.args[0]}"
            ) from None
        self._state.set_broker_connected(True)
        missing = [topic for topic in self._options.topics if topic not in metadata.topics]
        if missing:
            logger.warning("topics not (yet) on the broker: %s", ", ".join(missing))
        self._consumer.subscribe(
            list(self._options.topics),
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        logger.info(
            "subscribed to %s as group %s", ", ".join(self._options.topics), self._options.group_id
        )

    @property
    def paused(self) -> bool:
        return self._paused

    def poll(self, timeout: float) -> Record | None:
        """The next message, or None (nothing within ``timeout``, or a non-fatal error, logged)."""
        message = self._consumer.poll(timeout)
        self._state.polled()
        if message is None:
            return None
        error = message.error()
        if error is not None:
            self._handle_error(error)
            return None
        self._state.set_broker_connected(True)
        topic, partition, offset = message.topic(), message.partition(), message.offset()
        if topic is None or partition is None or offset is None:
            return None  # not a fetched message (consumers never get these without an error)
        return Record(topic, partition, offset, message.value(), message.key())

    def pause(self) -> None:
        """Stop fetching all assigned partitions; ``poll()`` keeps the group membership alive."""
        if not self._paused:
            self._paused = True
            self._consumer.pause(self._consumer.assignment())

    def resume(self) -> None:
        if self._paused:
            self._paused = False
            self._consumer.resume(self._consumer.assignment())

    def commit(self, offsets: Mapping[TopicPartition, int]) -> dict[TopicPartition, int]:
        """Commit ``{partition: next offset}`` synchronously; returns the ones that succeeded."""
        if not offsets:
            return {}
        request = [
            confluent_kafka.TopicPartition(tp.topic, tp.partition, o) for tp, o in offsets.items()
        ]
        try:
            answer = self._consumer.commit(offsets=request, asynchronous=False)
        except KafkaException as exc:
            error = exc.args[0]
            if isinstance(error, KafkaError) and error.code() in _COMMIT_ERROR_IGNORED:
                return {}
            logger.warning("offset commit failed (will retry): %s", error)
            return {}
        done: dict[TopicPartition, int] = {}
        for part in answer or ():
            tp = TopicPartition(part.topic, part.partition)
            if part.error is not None:
                logger.warning(
                    "offset commit failed for %s[%d]: %s", tp.topic, tp.partition, part.error
                )
                continue
            done[tp] = offsets[tp]
            metrics.COMMITTED_OFFSET.labels(tp.topic, str(tp.partition)).set(offsets[tp])
        logger.debug("committed %s", {f"{tp.topic}[{tp.partition}]": o for tp, o in done.items()})
        return done

    def finished(self, record: Record, label: str) -> None:
        """Nothing to record per message: Kafka keeps progress as the committed offset."""

    def close(self) -> None:
        """Leave the group cleanly (the partitions move to other members at once)."""
        try:
            self._consumer.close()
        except (KafkaException, RuntimeError) as exc:
            logger.warning("closing the Kafka consumer failed: %s", exc)

    # -- callbacks (run inside poll() on the poll thread) ---------------------------------------

    def _listening(self) -> RebalanceListener:
        if self._listener is None:  # librdkafka calls these only after subscribe() in start()
            raise RuntimeError("rebalance callback before start()")
        return self._listener

    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        # Assign here and set each partition's pause state to ours: a new partition starts
        # unpaused, while librdkafka keeps an old one's pause across an eager unassign/assign
        # (librdkafka #1849), so a resume() made while nothing was assigned would not reach it.
        if self._cooperative:
            consumer.incremental_assign(partitions)
        else:
            consumer.assign(partitions)
        if self._paused:
            consumer.pause(partitions)
        else:
            consumer.resume(partitions)
        self._listening().on_assign([TopicPartition(p.topic, p.partition) for p in partitions])

    def _on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        self._listening().on_revoke([TopicPartition(p.topic, p.partition) for p in partitions])

    def _on_lost(self, consumer: Any, partitions: list[Any]) -> None:
        self._listening().on_lost([TopicPartition(p.topic, p.partition) for p in partitions])

    def _on_error(self, error: KafkaError) -> None:
        if error.code() in (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT):
            self._state.set_broker_connected(False)
        self._handle_error(error)

    def _on_stats(self, stats_json: str) -> None:
        try:
            stats = json.loads(stats_json)
        except ValueError:
            return
        brokers = [b for b in stats.get("brokers", {}).values() if b.get("nodeid", -1) >= 0]
        if brokers:
            self._state.set_broker_connected(any(b.get("state") == "UP" for b in brokers))
        for topic, info in stats.get("topics", {}).items():
            for partition, pstats in info.get("partitions", {}).items():
                lag = pstats.get("consumer_lag", -1)
                if partition != "-1" and lag is not None and lag >= 0:
                    metrics.CONSUMER_LAG.labels(topic, partition).set(lag)

    def _handle_error(self, error: KafkaError) -> None:
        if error.fatal():
            raise SourceError(f"fatal Kafka error: {error.str()}")
        now = time.monotonic()
        if (
            now - self._last_error_log.get(error.code(), -_ERROR_LOG_INTERVAL)
            >= _ERROR_LOG_INTERVAL
        ):
            self._last_error_log[error.code()] = now
            logger.warning("Kafka: %s", error.str())
