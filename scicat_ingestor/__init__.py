"""scicat-ingestor: makes newly written NeXus files findable in SciCat, driven by Kafka."""

__version__ = "0.1.0"
