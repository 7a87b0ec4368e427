"""Process exit codes, the same for every command (documented in the README)."""

EXIT_OK = 0  # done: everything ingested, valid, or a clean stop
EXIT_FAILURE = 1  # ran, but something failed (a file, a fatal runtime error)
EXIT_USAGE = 2  # bad command line, configuration or schema: nothing was attempted
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for a command stopped by Ctrl-C
