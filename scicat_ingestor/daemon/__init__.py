"""The long-running service: the poll loop that hands records to the worker pool, applies
outcomes (commit, retry, dead letter), and the dead-letter sinks."""
