"""scicat-ingestor: makes newly written NeXus files findable in SciCat, driven by Kafka."""

from importlib.metadata import PackageNotFoundError, version

try:
    # Set at build time from the git tag (setuptools-scm), so it is never edited by hand.
    __version__ = version("scicat-ingestor")
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0.0.0+unknown"
