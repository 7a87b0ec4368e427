"""Test harness shipped with the package: real Kafka broker (Tansu), SciCat stand-in, fake file-writer."""
