"""The ``ingest`` subcommand in tests: its config over a ``tree`` (see ``helpers.fixtures``) and
its summary's totals."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from scicat_ingestor.config.model import IngestorConfig, build
from scicat_ingestor.testing.scicat import SciCatStandIn


def ingest_config(tree: Path, standin: SciCatStandIn, **file_handling: Any) -> IngestorConfig:
    """Config for ``tree``'s data and schemas against ``standin``."""
    data = {
        "scicat": {"host": standin.url, "token": standin.token, "timeout": 2},
        "ingestion": {
            "schemas_directory": str(tree / "schemas"),
            "file_handling": {"data_directory": str(tree / "data"), **file_handling},
        },
    }
    return build(IngestorConfig, data, "test")


def totals(out: str) -> str:
    """The totals line without its duration: ``2 file(s): 2 created, ...``."""
    line = out.splitlines()[-1]
    return re.sub(r" in \d+\.\d s:", ":", line)
