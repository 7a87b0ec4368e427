"""One file (or sample) into SciCat: the pipeline, its attempt wrapper and outcomes, files and
checksums, thumbnails, follow-up jobs, retry schedules and the dead-letter record format."""
