"""`python -m fbnet_tf.demo render --out DIR [--seed S] [--scale small|medium] [--workers N]`,
`python -m fbnet_tf.demo sheet --out sheet.png` and `python -m fbnet_tf.demo check --root DIR`."""
from __future__ import annotations

import argparse
import json
import sys

from fbnet_tf.cli import integer


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fbnet_tf.demo", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    render = commands.add_parser("render", help="render the demo world as raw AffectNet/Aff-Wild2/DISFA/RAF-DB trees")
    render.add_argument("--out", required=True, help="output folder; each database goes to OUT/<database>")
    render.add_argument("--seed", type=integer(0), default=0)
    render.add_argument("--scale", choices=("small", "medium"), default="small")
    render.add_argument("--workers", type=integer(1), default=2)
    render.add_argument("--databases", nargs="+", default=None, help="a subset of affectnet affwild2 disfa rafdb")
    sheet = commands.add_parser("sheet", help="draw the contact sheet: one row per expression and per AU")
    sheet.add_argument("--out", required=True, help="PNG file to write")
    sheet.add_argument("--seed", type=integer(0), default=0)
    sheet.add_argument("--tile", type=integer(16), default=80, help="tile size in pixels")
    check = commands.add_parser("check", help="is a rendered world learnable, does relatedness hold (needs sklearn)")
    check.add_argument("--root", required=True, help="the folder `render --out` wrote")
    args = parser.parse_args(argv)

    if args.command == "render":
        from fbnet_tf.demo import DATABASES, render_world

        summary = render_world(args.out, seed=args.seed, scale=args.scale, workers=args.workers,
                               databases=tuple(args.databases or DATABASES))
        print(json.dumps(summary, indent=2))
    elif args.command == "check":
        from fbnet_tf.demo.checks import format_report, run_all

        print(format_report(run_all(args.root)))
    else:
        from fbnet_tf.demo.sheet import contact_sheet

        path = contact_sheet(args.out, seed=args.seed, tile=args.tile)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
