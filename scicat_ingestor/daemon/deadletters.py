"""Messages that cannot be ingested: kept with their reason instead of dropped, and replayable.

A message is dead-lettered when it can never be ingested as it is (poison bytes, a rejected file).
Storing the letter is part of its delivery: the daemon commits past the message only once a sink
confirmed it. Sinks: a Kafka topic (original value and key, reason in headers) and/or a JSON-lines
file; each letter goes to every sink and is stored when at least one confirmed it. With neither
configured the full record is logged at ERROR (and counts as stored: the operator chose so).

No sink blocks its caller: the Kafka producer confirms through delivery callbacks and the file is
appended and fsynced by its own thread. Confirmations are handed back only in ``DeadLetters.poll``,
so the daemon applies them on its poll thread.
"""

from __future__ import annotations

import base64
import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import confluent_kafka
from confluent_kafka import KafkaError, KafkaException

from scicat_ingestor.config.model import DeadLetterOptions, KafkaOptions
from scicat_ingestor.ingest.letters import append_letter
from scicat_ingestor.ops.logs import redact_secrets
from scicat_ingestor.ops.metrics import DEAD_LETTER_FAILURES, DEAD_LETTERS
from scicat_ingestor.sources.base import Record
from scicat_ingestor.sources.kafka import client_settings

logger = logging.getLogger("scicat_ingestor.deadletter")

DELIVERY_TIMEOUT = 30.0  # seconds until an unacknowledged letter counts as not stored
# A sink that has not answered by then (a hung mount under the file) is reported as failing; it is
# later than the producer's own timeout, so the Kafka sink reports its error first.
ANSWER_TIMEOUT = DELIVERY_TIMEOUT + 5.0
FILE_KEY, TOPIC_KEY = "ingestion.dead_letter.file", "ingestion.dead_letter.topic"

Done = Callable[[str | None], None]  # None: stored; otherwise why not (one line)


class DeadLetterError(RuntimeError):
    """A sink cannot be used at start-up; ``str()`` is one line naming its config key."""


@dataclass(frozen=True)
class DeadLetter:
    """One message that could not be ingested, with where it came from and why."""

    reason: str
    record: Record
    file_name: str = ""
    job_id: str = ""
    dead_lettered_at: str = field(
        default_factory=lambda: datetime.now(UTC).isoformat(timespec="milliseconds")
    )

    def headers(self) -> list[tuple[str, str | bytes | None]]:
        """Kafka headers describing the letter (the value stays the original bytes)."""
        return [
            ("reason", redact_secrets(self.reason).encode()),
            ("source_topic", self.record.topic.encode()),
            ("source_partition", str(self.record.partition).encode()),
            ("source_offset", str(self.record.offset).encode()),
            ("dead_lettered_at", self.dead_lettered_at.encode()),
        ]

    def as_json(self) -> dict[str, Any]:
        """The JSON-lines form: header fields, base64 value and the decoded file/job when known."""
        value = self.record.value
        return {
            "reason": redact_secrets(self.reason),
            "source_topic": self.record.topic,
            "source_partition": self.record.partition,
            "source_offset": self.record.offset,
            "dead_lettered_at": self.dead_lettered_at,
            "value": None if value is None else base64.b64encode(value).decode("ascii"),
            "file_name": self.file_name,
            "job_id": self.job_id,
        }


class DeadLetterSink(Protocol):
    """One place letters are stored. ``write`` never blocks; ``done`` may run on any thread."""

    name: str  # the config key, named in logs and /ready
    label: str  # the metrics label

    def write(self, letter: DeadLetter, done: Done) -> None: ...

    def poll(self) -> None: ...

    def close(self, timeout: float) -> None: ...


class _ClientLog:
    """librdkafka's own log lines, at DEBUG: a broker outage would otherwise log every reconnect;
    what matters reaches the daemon as failed deliveries (logged at most once a minute)."""

    def log(self, level: int, message: str, *args: object) -> None:
        logger.debug(message, *args)


class KafkaSink:
    """Produces the original value and key to a topic; the broker's acknowledgement is ``done``.

    ``acks=all`` with idempotence, so an acknowledged letter is on every in-sync replica and a
    retried produce is not written twice. Delivery callbacks run inside ``poll`` (the caller's
    thread); a letter not acknowledged within ``delivery_timeout`` is reported as not stored.
    """

    name = TOPIC_KEY
    label = "kafka"

    def __init__(
        self, options: KafkaOptions, topic: str, delivery_timeout: float = DELIVERY_TIMEOUT
    ) -> None:
        self._topic = topic
        settings = {
            **client_settings(options),
            "enable.idempotence": True,
            "acks": "all",
            "message.timeout.ms": max(int(delivery_timeout * 1000), 1),
            "error_cb": self._on_error,
            "logger": _ClientLog(),
        }
        try:
            self._producer = confluent_kafka.Producer(settings)
        except KafkaException as exc:
            raise DeadLetterError(f"{TOPIC_KEY}: {topic}: {exc.args[0]}") from None

    def write(self, letter: DeadLetter, done: Done) -> None:
        def delivered(error: KafkaError | None, message: Any) -> None:
            done(None if error is None else f"topic {self._topic}: {error.str()}")

        try:
            self._producer.produce(
                self._topic,
                value=letter.record.value,
                key=letter.record.key,
                headers=letter.headers(),
                on_delivery=delivered,
            )
        except (KafkaException, BufferError) as exc:
            done(f"topic {self._topic}: {exc}")
        self._producer.poll(0)

    def poll(self) -> None:
        self._producer.poll(0)

    def _on_error(self, error: KafkaError) -> None:
        # Broker-down and similar errors surface as failed deliveries; only fatal ones matter here.
        if error.fatal():
            logger.error("dead-letter producer: fatal error: %s", error.str())
        else:
            logger.debug("dead-letter producer: %s", error.str())

    def close(self, timeout: float) -> None:
        """Wait for letters already on the wire; queued ones were given up by the caller."""
        self._producer.purge(in_queue=True, in_flight=False)
        left = self._producer.flush(timeout)
        if left:
            logger.error(
                "%d dead letter(s) not acknowledged by topic %s at close", left, self._topic
            )


class FileSink:
    """Appends one JSON object per line and fsyncs it, in its own thread, before ``done``.

    Opened per letter (letters are rare), so a file replaced or rotated by the operator is
    picked up. ``FileSink(path)`` checks at once that the file can be opened for append.
    """

    name = FILE_KEY
    label = "file"

    def __init__(self, path: str) -> None:
        self._path = Path(path)
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            with self._path.open("a", encoding="utf-8"):
                pass
        except OSError as exc:
            raise DeadLetterError(
                f"{FILE_KEY}: cannot open {self._path} for append: {exc.strerror or exc}"
            ) from None
        self._queue: queue.SimpleQueue[tuple[DeadLetter, Done] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="dead-letter-file", daemon=True)
        self._thread.start()

    def write(self, letter: DeadLetter, done: Done) -> None:
        self._queue.put((letter, done))

    def poll(self) -> None:
        """Nothing to serve: the writer thread reports each letter itself."""

    def _loop(self) -> None:
        while (item := self._queue.get()) is not None:
            letter, done = item
            done(self._append(letter))

    def _append(self, letter: DeadLetter) -> str | None:
        return append_letter(self._path, letter.as_json())

    def close(self, timeout: float) -> None:
        """Write what is queued (up to ``timeout`` seconds), then stop the writer thread."""
        self._queue.put(None)
        self._thread.join(timeout)


@dataclass(eq=False)
class _Sending:
    """One letter handed to the sinks, until every sink answered."""

    letter: DeadLetter
    on_done: Done
    deadline: float
    stored: list[DeadLetterSink] = field(default_factory=list)
    failed: list[tuple[DeadLetterSink, str]] = field(default_factory=list)
    reported: bool = False

    def answered(self, sink: DeadLetterSink) -> bool:
        return sink in self.stored or any(sink is failed for failed, _ in self.failed)


class DeadLetters:
    """Sends each letter to every sink; ``poll`` reports each letter once all sinks answered.

    A letter is stored when at least one sink confirmed it; a sink that failed while another
    stored it is logged at ERROR and counted, not retried (the letter exists). When none stored
    it, ``on_done`` gets the errors, naming each sink by its config key, and the caller retries.
    """

    def __init__(
        self, sinks: Sequence[DeadLetterSink], answer_timeout: float = ANSWER_TIMEOUT
    ) -> None:
        self._sinks = list(sinks)
        self._answer_timeout = answer_timeout
        self._answers: queue.SimpleQueue[tuple[_Sending, DeadLetterSink, str | None]] = (
            queue.SimpleQueue()
        )
        self._open: list[_Sending] = []  # sent, not reported yet

    @classmethod
    def from_config(cls, options: DeadLetterOptions, kafka: KafkaOptions) -> DeadLetters:
        """The configured sinks, checked: DeadLetterError (one line) if one cannot be used."""
        sinks: list[DeadLetterSink] = []
        if options.topic:
            sinks.append(KafkaSink(kafka, options.topic))
        if options.file:
            sinks.append(FileSink(options.file))
        if not sinks:
            logger.warning(
                "no dead-letter sink configured (%s / %s): messages that cannot be ingested "
                "are only logged at ERROR",
                TOPIC_KEY,
                FILE_KEY,
            )
        return cls(sinks)

    def send(self, letter: DeadLetter, on_done: Done) -> None:
        """Hand ``letter`` to every sink; ``on_done`` is called from a later ``poll``."""
        sending = _Sending(letter, on_done, time.monotonic() + self._answer_timeout)
        self._open.append(sending)
        for sink in self._sinks:
            sink.write(letter, self._answer_to(sending, sink))

    def _answer_to(self, sending: _Sending, sink: DeadLetterSink) -> Done:
        """The ``done`` for one sink: queue the answer for ``poll`` (safe from any thread)."""

        def done(error: str | None) -> None:
            self._answers.put((sending, sink, error))

        return done

    def poll(self) -> None:
        """Serve the sinks' callbacks and report every letter all sinks answered for."""
        for sink in self._sinks:
            sink.poll()
        while True:
            try:
                sending, sink, error = self._answers.get_nowait()
            except queue.Empty:
                break
            if sending.reported:
                continue  # a late answer from a sink already reported as not answering
            if error is None:
                sending.stored.append(sink)
            else:
                sending.failed.append((sink, error))
        now = time.monotonic()
        for sending in self._open:
            if now >= sending.deadline:
                for sink in self._sinks:
                    if not sending.answered(sink):
                        timeout = self._answer_timeout
                        sending.failed.append((sink, f"no answer within {timeout:g} s"))
        done = [s for s in self._open if all(s.answered(sink) for sink in self._sinks)]
        self._open = [s for s in self._open if s not in done]
        for sending in done:
            sending.reported = True
            self._report(sending)

    def store(self, letter: DeadLetter, timeout: float = DELIVERY_TIMEOUT) -> str | None:
        """Send and wait (for one-off callers, not the daemon); None when stored, else why not."""
        answer: list[str | None] = []
        self.send(letter, answer.append)
        deadline = time.monotonic() + timeout
        while not answer and time.monotonic() < deadline:
            self.poll()
            time.sleep(0.005)
        return answer[0] if answer else f"not confirmed within {timeout:g} s"

    def _report(self, sending: _Sending) -> None:
        letter = sending.letter
        if not self._sinks:
            logger.error("dead letter (no sink configured): %s", json.dumps(letter.as_json()))
            sending.on_done(None)
            return
        for sink, error in sending.failed:
            DEAD_LETTER_FAILURES.labels(sink.label).inc()
            # Stored elsewhere: worth a line per letter. Stored nowhere: the caller reports the
            # outage (the daemon at most once a minute), so no line per retry here.
            level = logging.WARNING if sending.stored else logging.DEBUG
            logger.log(level, "%s: dead letter not stored: %s", sink.name, error)
        for sink in sending.stored:
            DEAD_LETTERS.labels(sink.label).inc()
        if not sending.stored:
            sending.on_done("; ".join(f"{sink.name}: {error}" for sink, error in sending.failed))
            return
        logger.warning(
            "dead-lettered %s[%d]@%d%s: %s",
            letter.record.topic,
            letter.record.partition,
            letter.record.offset,
            f" (file {letter.file_name})" if letter.file_name else "",
            letter.reason,
        )
        sending.on_done(None)

    def close(self, timeout: float = 10.0) -> None:
        for sink in self._sinks:
            sink.close(timeout)
