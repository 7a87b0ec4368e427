"""The imsc metadata schema engine: load, select, evaluate variables, build the dataset payload."""
