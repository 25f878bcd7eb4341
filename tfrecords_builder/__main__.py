"""`python -m tfrecords_builder DATABASE --root RAW_DIR --out OUT_DIR [options]`: a thin layer over `build`."""
from __future__ import annotations

import argparse
import os
import sys


def _short(value, limit: int = 32) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 4] + "...'"


def _option_text(key: str, declared) -> str:
    from tfrecords_builder.base import as_option

    option = as_option(key, declared)
    bounded = option.choices or option.minimum is not None or option.maximum is not None or option.below is not None
    return f"{key}={_short(option.default)}" + (f" ({option.expected()})" if bounded else "")


def _parser(databases: dict) -> argparse.ArgumentParser:
    listing = "\n".join(f"  {name:<16} {cls.DESCRIPTION}" + (f"\n  {'':<16} options: " + ", ".join(
        _option_text(key, value) for key, value in cls.OPTIONS.items()) if cls.OPTIONS else "")
        for name, cls in databases.items())
    parser = argparse.ArgumentParser(
        prog="python -m tfrecords_builder",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Build fbnet TFRecords (aligned face crops + canonical labels) from a face database.",
        epilog=f"databases:\n{listing}\n\nexample:\n  python -m tfrecords_builder rafdb --root ~/data/RAF-DB "
               "--out ~/tfrecords/rafdb --workers 2")
    parser.add_argument("database", choices=list(databases), metavar="DATABASE", help="one of the databases below")
    parser.add_argument("--root", required=True, help="the database folder as downloaded (see each builder)")
    parser.add_argument("--out", required=True, help="output folder for the shards and manifest.json")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--image-size", type=int, default=112, help="side of the aligned crop (default 112)")
    parser.add_argument("--shards", type=int, default=None, help="shards per split (default: by size)")
    parser.add_argument("--frame-stride", type=int, default=1, help="keep every N-th video frame (default 1)")
    parser.add_argument("--strict", action="store_true", help="fail on the first skipped input")
    parser.add_argument("--force", action="store_true",
                        help="rebuild every shard (default: keep the shards of an earlier run whose inputs and "
                             "arguments are unchanged)")
    parser.add_argument("--allow-partial", action="store_true",
                        help="accept a build that writes nothing or skips more than half of its inputs "
                             "(default: exit 1 naming the commonest skip reasons)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars or summary table")
    parser.add_argument("--detector", default=None,
                        help="the face detector of the video databases' builders (their option detector): fast "
                             "(BlazeFace + FaceMesh, the default) or mtcnn (the reference, ~40x slower)")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="a builder option (repeatable), e.g. --option validation_fraction=0.1")
    return parser


def main(argv=None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from tfrecords_builder import DATABASES, BuildError, LayoutError, build
    from tfrecords_builder.base import UsageError

    args = _parser(DATABASES).parse_args(argv)
    options = {}
    for text in args.option:
        key, sep, value = text.partition("=")
        if not sep:
            print(f"--option {text!r}: expected KEY=VALUE", file=sys.stderr)
            return 2
        options[key.strip().replace("-", "_")] = value
    known = DATABASES[args.database].OPTIONS
    if args.detector is not None:
        if "detector" not in known:
            print(f"--detector: {args.database} does not detect faces in video frames (it takes no detector "
                  "option)", file=sys.stderr)
            return 2
        options["detector"] = args.detector
    if set(options) - set(known):
        print(f"{args.database}: unknown option(s) {sorted(set(options) - set(known))}; "
              f"it takes {sorted(known) or 'none'}", file=sys.stderr)
        return 2
    try:
        build(args.database, args.root, args.out, workers=args.workers, image_size=args.image_size,
              strict=args.strict, shards=args.shards, frame_stride=args.frame_stride,
              progress=not args.no_progress, force=args.force, allow_partial=args.allow_partial, **options)
    except UsageError as error:  # checked before any work: nothing was written
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (LayoutError, BuildError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
