"""Test harness shipped with the package: Tansu broker, SciCat stand-in, fake file-writer, demo."""
