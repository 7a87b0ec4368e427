"""Commands: each subcommand's wiring, apart from the machinery it drives."""
