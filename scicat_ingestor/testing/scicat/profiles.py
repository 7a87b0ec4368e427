"""The backend versions the stand-in plays, and everything that differs between them, in one place.

``4.5``: scicat-backend-next 4.5.0, API v3 only (``tests/data/scicat-real-backend-behaviour.md``).
``5``: SciCatProject/backend v5 (master ``783086a``), API v3 and v4
(``data/scicat-backend-v5-behaviour.md``, ``data/openapi-v5.json``). Both are held to the
recorded scenarios in ``data/conformance/``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from scicat_ingestor.testing.scicat.validation import (
    OPENAPI_PATH,
    OPENAPI_V5_PATH,
    V4_DTOS,
    VALIDATED_DTOS,
)

BACKENDS = ("4.5", "5")
DEFAULT_BACKEND = "5"


@dataclass(frozen=True)
class Profile:
    """One backend version's answers where the versions differ."""

    name: str
    openapi_path: Path
    dtos: tuple[str, ...]  # the schemas of that document the stand-in validates bodies against
    serves_v4: bool  # /api/v4 routes exist (4.5: 404 ``Cannot ...``)
    session_expired: bool  # an expired token gets 401 SESSION_EXPIRED (4.5: answered as anonymous)
    sample_name_required: bool  # POST samples without sampleName → 500 (mongoose, not the DTO)
    size_by_increment: bool  # a block adds to the dataset's size (4.5: sum over its blocks)
    wrong_type_message: str  # v3 POST datasets with a type other than raw/derived
    untyped_is_validated: bool  # v3 POST datasets without type: 400 from the generic DTO (4.5)


PROFILES = {
    "4.5": Profile(
        name="4.5",
        openapi_path=OPENAPI_PATH,
        dtos=VALIDATED_DTOS,
        serves_v4=False,
        session_expired=False,
        sample_name_required=False,
        size_by_increment=False,
        wrong_type_message="Wrong dataset type!",
        untyped_is_validated=True,
    ),
    "5": Profile(
        name="5",
        openapi_path=OPENAPI_V5_PATH,
        dtos=VALIDATED_DTOS + V4_DTOS,
        serves_v4=True,
        session_expired=True,
        sample_name_required=True,
        size_by_increment=True,
        wrong_type_message="Invalid dataset type!",
        untyped_is_validated=False,
    ),
}


def profile(backend: str) -> Profile:
    """The profile named ``backend``; a clear error for anything else."""
    try:
        return PROFILES[backend]
    except KeyError:
        raise ValueError(
            f"unknown SciCat backend {backend!r}: choose one of {', '.join(BACKENDS)}"
        ) from None
