"""Input and output: file specs, the reader registry, and the output writers."""

from holodask.io.registry import (  # noqa: F401
    FileSpec,
    FrameMetadata,
    FrameSource,
    open_source,
    parse_spec,
    reader_types,
    register_reader,
)
