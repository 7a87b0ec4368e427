"""End-to-end benchmark of scicat-ingestor (``make bench`` / ``python -m bench``); see README.md."""
