"""Where announcements come from: the source protocol, Kafka, the directory watcher, and the
decoding of file-writer messages. Nothing here knows about SciCat or schemas' results."""
