"""Build the project's TFRecords (DESIGN.md contract) from face databases as the user downloaded them.

`build("rafdb", root, out)` in Python, `python -m tfrecords_builder rafdb --root ... --out ...` on the command line.
`DATABASES` maps each database name to its builder class.
"""
from tfrecords_builder.base import (  # noqa: F401
    Builder, Item, LayoutError, Option, Reason, Skip, UsageError, holdout, split_of)
from tfrecords_builder.writer import BuildError, PartialBuild, build, format_summary  # noqa: F401


def __getattr__(name):
    # Discovered on first use so that `import tfrecords_builder` stays cheap.
    if name == "DATABASES":
        from tfrecords_builder.registry import databases

        return databases()
    raise AttributeError(name)
