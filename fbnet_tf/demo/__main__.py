"""`python -m fbnet_tf.demo render --out DIR [--seed S] [--scale small|medium] [--workers N] [--only R,R]`,
`python -m fbnet_tf.demo sheet --out sheet.png` and `python -m fbnet_tf.demo check --root DIR`."""
from __future__ import annotations

import argparse
import json
import sys

from fbnet_tf.cli import integer
from fbnet_tf.demo import DATABASES, FACEBEHAVIORNET, FATAUVANET

_GROUPS = {"facebehaviornet": FACEBEHAVIORNET, "fatauvanet": FATAUVANET}


def _releases(text: str) -> tuple[str, ...]:
    """'celeba,bp4d' or 'fatauvanet' -> the releases, in DATABASES order; an unknown name is an error."""
    names = [name.strip().lower() for name in text.split(",") if name.strip()]
    chosen = set()
    for name in names:
        if name not in DATABASES and name not in _GROUPS:
            raise argparse.ArgumentTypeError(f"unknown release {name!r}; expected some of {', '.join(DATABASES)} "
                                             f"or {', '.join(_GROUPS)}")
        chosen.update(_GROUPS.get(name, (name,)))
    if not chosen:
        raise argparse.ArgumentTypeError("no release named")
    return tuple(name for name in DATABASES if name in chosen)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fbnet_tf.demo", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    render = commands.add_parser("render", help="render the demo world as raw database trees (AffectNet, Aff-Wild2, "
                                                "DISFA, RAF-DB, CelebA, BP4D, SEMAINE, Aff-Wild)")
    render.add_argument("--out", required=True, help="output folder; each database goes to OUT/<database>")
    render.add_argument("--seed", type=integer(0), default=0)
    render.add_argument("--scale", choices=("small", "medium"), default="small")
    render.add_argument("--workers", type=integer(1), default=2)
    render.add_argument("--only", type=_releases, default=None, metavar="RELEASE[,RELEASE]",
                        help="render only these releases (of: %(choices)s; or a model's group: facebehaviornet, "
                             "fatauvanet); releases rendered earlier in --out stay" % {"choices": " ".join(DATABASES)})
    render.add_argument("--databases", nargs="+", default=None, help=argparse.SUPPRESS)  # the older spelling
    sheet = commands.add_parser("sheet", help="draw the contact sheet: one row per expression and per AU")
    sheet.add_argument("--out", required=True, help="PNG file to write")
    sheet.add_argument("--seed", type=integer(0), default=0)
    sheet.add_argument("--tile", type=integer(16), default=80, help="tile size in pixels")
    check = commands.add_parser("check", help="is a rendered world learnable, does relatedness hold (needs sklearn)")
    check.add_argument("--root", required=True, help="the folder `render --out` wrote")
    args = parser.parse_args(argv)

    if args.command == "render":
        from fbnet_tf.demo import render_world

        releases = args.only or (_releases(",".join(args.databases)) if args.databases else DATABASES)
        summary = render_world(args.out, seed=args.seed, scale=args.scale, workers=args.workers, databases=releases)
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
