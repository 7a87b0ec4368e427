"""The configuration model: dataclasses, field types, secrets masking, and the mapping
between config keys and command-line override flags."""
