"""``python -m scicat_ingestor`` → the command line."""

import sys

from scicat_ingestor.commands.cli import main

sys.exit(main())
