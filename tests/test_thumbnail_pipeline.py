"""Thumbnails through the pipeline and the SciCat stand-in: attached once, never cost a dataset."""

from __future__ import annotations

import base64
import io
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from helpers.pipeline import PID, MakePipeline, ingest
from helpers.versions import VERSIONS
from scicat_ingestor.config.model import SciCatOptions
from scicat_ingestor.ingest.outcome import Created, Existed, Outcome
from scicat_ingestor.ingest.pipeline import Pipeline
from scicat_ingestor.ops.metrics import REGISTRY
from scicat_ingestor.scicat import SciCatClient
from scicat_ingestor.testing.nexus_plots import write_plot_file
from scicat_ingestor.testing.scicat import SciCatStandIn

pytestmark = pytest.mark.integration


@pytest.fixture
def coda_with(tmp_path: Path, data_dir: Path) -> Callable[[str | None], Path]:
    """``coda_with(kind)``: small-coda.hdf in the data root, with a ``kind`` plot added."""

    def make(kind: str | None) -> Path:
        target = tmp_path / "data" / "coda" / "raw" / "small-coda.hdf"
        if kind is None:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(data_dir / "small-coda.hdf", target)
            return target
        return write_plot_file(target, kind, template=data_dir / "small-coda.hdf")

    return make


def thumbnails(enabled: bool = True, **keys: Any) -> dict[str, Any]:
    """The ``ingestion`` section of ``make_pipeline`` with ``ingestion.thumbnail`` set."""
    return {"thumbnail": {"enabled": enabled, **keys}}


def _ingest(pipeline: Pipeline, path: Path) -> Outcome:
    return ingest(pipeline, path, job_id="job-1")


def _count(result: str) -> float:
    value = REGISTRY.get_sample_value("scicat_ingestor_thumbnails_total", {"result": result})
    return value or 0.0


def _attachment_requests(standin: SciCatStandIn) -> int:
    return sum(n for key, n in standin.stats()["requests"].items() if "attachments" in key)


def test_attached_once_with_caption_groups_and_png(
    make_pipeline: MakePipeline,
    coda_with: Callable[[str | None], Path],
    scicat_standin: SciCatStandIn,
) -> None:
    path = coda_with("image_2d")
    attached = _count("attached")
    assert isinstance(_ingest(make_pipeline(ingestion=thumbnails()), path), Created)
    [attachment] = scicat_standin.attachments[PID]  # validated against CreateAttachmentV3Dto
    dataset = scicat_standin.datasets[PID]
    assert attachment["caption"] == "data vs y and x"
    assert attachment["datasetId"] == PID
    assert attachment["ownerGroup"] == dataset["ownerGroup"]
    assert attachment["accessGroups"] == dataset["accessGroups"]
    prefix = "data:image/png;base64,"
    assert attachment["thumbnail"].startswith(prefix)
    png = base64.b64decode(attachment["thumbnail"][len(prefix) :])
    assert Image.open(io.BytesIO(png)).size == (400, 300)
    assert _count("attached") == attached + 1

    # redelivered: the dataset exists and has its picture → no second attachment
    exists = _count("exists")
    assert isinstance(_ingest(make_pipeline(ingestion=thumbnails()), path), Existed)
    assert len(scicat_standin.attachments[PID]) == 1
    assert _count("exists") == exists + 1


def test_existing_dataset_without_picture_gets_one(
    make_pipeline: MakePipeline,
    coda_with: Callable[[str | None], Path],
    scicat_standin: SciCatStandIn,
) -> None:
    path = coda_with("line_1d")
    assert isinstance(_ingest(make_pipeline(ingestion=thumbnails(enabled=False)), path), Created)
    assert _attachment_requests(scicat_standin) == 0  # off: not even a GET
    assert isinstance(_ingest(make_pipeline(ingestion=thumbnails()), path), Existed)
    [attachment] = scicat_standin.attachments[PID]
    assert attachment["caption"] == "counts vs tof"


def test_a_file_without_plot_is_created_with_a_warning(
    make_pipeline: MakePipeline,
    coda_with: Callable[[str | None], Path],
    scicat_standin: SciCatStandIn,
    caplog: pytest.LogCaptureFixture,
) -> None:
    path = coda_with(None)
    no_plot = _count("no_plot")
    with caplog.at_level(logging.WARNING, logger="scicat_ingestor.pipeline"):
        assert isinstance(_ingest(make_pipeline(ingestion=thumbnails()), path), Created)
    assert scicat_standin.attachments == {}
    assert _count("no_plot") == no_plot + 1
    [warning] = [r for r in caplog.records if r.name == "scicat_ingestor.pipeline"]
    assert f"no thumbnail for dataset {PID} (no_plot): no default plot" in warning.getMessage()


@pytest.mark.parametrize(("status", "result"), [(400, "rejected"), (503, "unavailable")])
def test_failing_attachment_requests_do_not_cost_the_dataset(
    status: int,
    result: str,
    *,
    make_pipeline: MakePipeline,
    coda_with: Callable[[str | None], Path],
    scicat_standin: SciCatStandIn,
    caplog: pytest.LogCaptureFixture,
) -> None:
    path = coda_with("line_1d")
    before = _count(result)
    # every attachment request fails (retries included); the dataset's requests do not
    scicat_standin.faults.fail_next(10, status, f"datasets/{PID.replace('/', '%2F')}/attachments")
    with caplog.at_level(logging.WARNING, logger="scicat_ingestor.pipeline"):
        outcome = _ingest(make_pipeline(ingestion=thumbnails()), path)
    assert isinstance(outcome, Created), outcome
    assert PID in scicat_standin.datasets
    assert len(scicat_standin.origdatablocks) == 1
    assert _count(result) == before + 1
    assert any(f"({result})" in r.getMessage() for r in caplog.records)


class FirstPostAnswered(SciCatClient):
    """The real client, whose first attachment POST SciCat answers with ``status``, after
    storing it when ``stored`` (the answer is lost): the fault is set just before that POST, so
    the look-up before it goes through."""

    def __init__(self, options: SciCatOptions, standin: SciCatStandIn, status: int, stored: bool):
        super().__init__(options)
        self._fault: tuple[SciCatStandIn, int, bool] | None = (standin, status, stored)

    def create_attachment(self, pid: str, payload: Any) -> dict[str, Any]:
        if self._fault is not None:
            standin, status, stored = self._fault
            self._fault = None
            standin.faults.fail_next(1, status, commit=stored)  # the next request: this POST
        return super().create_attachment(pid, payload)


@VERSIONS
@pytest.mark.parametrize(
    "fault",
    [(500, True), (500, False), (504, True), (504, False)],
    ids=["500-answer-lost", "500-not-stored", "504-answer-lost", "504-not-stored"],
)
def test_an_ambiguous_answer_is_looked_up_so_the_picture_is_attached_once(
    make_pipeline: MakePipeline,
    coda_with: Callable[[str | None], Path],
    scicat_standin: SciCatStandIn,
    api_version: int,
    fault: tuple[int, bool],
) -> None:
    """The real backends store each v3 POST under an id of their own (ours is ignored), so a
    POST repeated after a lost answer made a second picture; without the look-up after a 500,
    the lost answer also counted as "no thumbnail" and a POST that was not stored stayed so.
    A 504 (a proxy's "gateway timeout") was re-sent by the transport itself, unlooked."""
    path = coda_with("line_1d")
    before = _count("attached") + _count("exists")

    def client(options: SciCatOptions) -> SciCatClient:
        return FirstPostAnswered(options, scicat_standin, *fault)

    pipeline = make_pipeline(
        scicat={"api_version": api_version}, ingestion=thumbnails(), client=client
    )
    assert isinstance(_ingest(pipeline, path), Created)
    assert len(scicat_standin.attachments[PID]) == 1
    assert _count("attached") + _count("exists") == before + 1
    assert isinstance(
        _ingest(make_pipeline(scicat={"api_version": api_version}, ingestion=thumbnails()), path),
        Existed,
    )
    assert len(scicat_standin.attachments[PID]) == 1


def test_too_large_for_max_points_is_a_warning(
    make_pipeline: MakePipeline,
    coda_with: Callable[[str | None], Path],
    scicat_standin: SciCatStandIn,
) -> None:
    path = coda_with("image_2d")  # 100 x 100 chunks
    before = _count("too_large")
    assert isinstance(_ingest(make_pipeline(ingestion=thumbnails(max_points=5000)), path), Created)
    assert scicat_standin.attachments == {}
    assert _count("too_large") == before + 1
