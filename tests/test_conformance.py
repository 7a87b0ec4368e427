"""The stand-in held to the scenarios recorded from the real SciCat backends (4.5 and 5), through
``python -m scicat_ingestor.testing.scicat.conformance``: both passes, nothing failed, only the
expiry scenarios skipped in the first pass (the second runs them)."""

from __future__ import annotations

import re

import pytest

from scicat_ingestor.testing.scicat import conformance
from scicat_ingestor.testing.scicat.profiles import BACKENDS

pytestmark = pytest.mark.integration

CLOSING = re.compile(r"^(\d+) passed, (\d+) failed, (\d+) skipped$", re.MULTILINE)


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_scenario_passes(backend: str, capsys: pytest.CaptureFixture[str]) -> None:
    status = conformance.main(["--backend", backend])
    output = capsys.readouterr().out
    expiry = len(conformance.expiry_scenarios(backend))
    closing = [tuple(map(int, m)) for m in CLOSING.findall(output)]
    assert len(closing) == 2, output
    (passed, failed, skipped), (expiry_passed, expiry_failed, expiry_skipped) = closing
    assert (failed, skipped) == (0, expiry), output  # skipped: only what the second pass runs
    assert (expiry_passed, expiry_failed, expiry_skipped) == (expiry, 0, 0), output
    assert passed > 20
    assert status == 0
    assert "FAIL " not in output


def test_a_token_lifetime_the_runner_would_skip_is_refused(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        conformance.main(["--backend", "5", "--token-lifetime", "10"])
    assert exit_info.value.code == 2
    assert "--token-lifetime must be > 0 and <= 5 s" in capsys.readouterr().err
