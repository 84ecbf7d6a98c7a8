"""``callpark prompts``: the spoken orbit's prompts (build the shipped ones; replace them per pool)."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path

from callpark import promptbuild, tables
from callpark.cli.common import Subparsers, admin_store, command, connect, group, print_json
from callpark.model.prompts import PROMPT_NAMES
from callpark.store import prompts as promptstore


def cmd_prompts_build(args: argparse.Namespace) -> int:
    out = Path(args.output) if args.output else promptbuild.SHIPPED_DIR
    written = promptbuild.build(out)
    print(f"wrote {len(written)} prompts to {out} (espeak-ng {promptbuild.VOICE}, 8 kHz 16-bit mono)")
    return 0


def cmd_prompts_set(args: argparse.Namespace) -> int:
    data = promptstore.read_prompt_file(Path(args.file))
    duration = promptstore.set_prompt(connect(args), args.pool, args.name, data)
    print(f"prompt {args.name} for {args.pool}: {Path(args.file).name} ({len(data)} bytes, {duration:.2f} s)")
    return 0


def cmd_prompts_show(args: argparse.Namespace) -> int:
    store = admin_store(args)
    infos = promptstore.show(store.kv, args.pool, set(store.state().pools))
    if args.json:
        print_json([asdict(i) for i in infos])
    else:
        rows = [(i.name, i.source, i.size, f"{i.duration_s:.2f}") for i in infos]
        print(tables.render(("prompt", "source", "bytes", "seconds"), rows))
    return 0


def cmd_prompts_clear(args: argparse.Namespace) -> int:
    promptstore.clear(connect(args), args.pool, args.name)
    what = f"prompt {args.name}" if args.name else "every prompt"
    print(f"{what} of {args.pool}: back to the shipped recording")
    return 0


def add_parsers(sub: Subparsers) -> None:
    """``prompts build|set|show|clear``."""
    prompts = group(sub, "prompts", "the spoken orbit's prompts (shipped, or replaced per pool)")
    p = command(prompts, "build", cmd_prompts_build, "regenerate the shipped prompts with espeak-ng and sox")
    p.add_argument("--output", metavar="DIR", help="write here instead of callpark/data/prompts")
    names = ", ".join(PROMPT_NAMES)
    p = command(prompts, "set", cmd_prompts_set, "replace one prompt of a pool (PCM WAV, 16-bit mono, 8 kHz)")
    p.add_argument("--pool", required=True)
    p.add_argument("name", help=f"one of: {names}")
    p.add_argument("file")
    p = command(prompts, "show", cmd_prompts_show, "list a pool's prompts and where each comes from")
    p.add_argument("--pool", required=True)
    p.add_argument("--json", action="store_true")
    p = command(prompts, "clear", cmd_prompts_clear, "go back to the shipped prompt(s)")
    p.add_argument("--pool", required=True)
    p.add_argument("name", nargs="?", help="one prompt (default: every prompt of the pool)")
