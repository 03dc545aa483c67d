#!/usr/bin/env python3
"""The engine's layering, checked: every top-level module of src/ may use only modules of a
lower layer, so no import circle can form. Run by `make lint` (and so `make test`).

    python3 scripts/layers.py          # exit 1 and a line per offending `crate::` use

A use is any `crate::<module>` path outside a comment. A new top-level module must be given
a layer below (the check fails until it is): that is the moment to decide what it may know.
It also reports the providers' payload and header names in the modules that must see neutral
changes (NEUTRAL), outside their tests.
"""
import os
import re
import sys

# Lower numbers know less. A module may use modules of strictly lower layers only.
LAYERS = {
    # Leaves: the console API's data types, time, the checked contract, CSV cells, and the
    # simulators (an independent oracle: they share no code with connectors or ingest).
    "api": 0,
    "clock": 0,
    "contract": 0,
    "csv": 0,
    "sim": 0,
    # Talking to the systems: the connectors (all provider vocabulary), secret references.
    "connectors": 1,
    "secrets": 1,
    # The rate budgets, the ledger (all SQL), the pure planner.
    "budget": 2,
    "ledger": 2,
    "plan": 2,
    # Inbound events, connecting accounts, reconciliation's pure comparison.
    "ingest": 3,
    "connect": 3,
    "reconcile": 3,
    # Every decision about a record, pure (the worker's I/O around it is the engine's).
    "decide": 4,
    # The engine: workers, pollers, jobs.
    "engine": 5,
    # Every operator operation, declared once: what the faces call.
    "operations": 6,
    # The faces and their assembly.
    "http": 7,
    "runtime": 8,
    "drill": 9,
}
# Provider vocabulary (payload shapes, property and header names) stays in connectors and
# ingest: the modules that decide and run see neutral changes. A string literal of these in
# their non-test code is reported.
NEUTRAL = ("plan", "decide", "engine", "reconcile", "operations")
PROVIDER_WORDS = re.compile(
    r'"[^"]*\b(propertyName|propertyValue|subscriptionType|previous_attributes|hs_object_id|'
    r'lastmodifieddate|hs_lastmodifieddate|X-HubSpot-[\w-]*|Stripe-Signature|Idempotency-Key)\b[^"]*"'
)
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")


def modules():
    found = set()
    for name in os.listdir(ROOT):
        # The crate roots, and cli/: the binary's commands (declared from main.rs, not lib.rs),
        # a face over the whole library rather than a library module with a layer of its own.
        if name in ("lib.rs", "main.rs", "cli"):
            continue
        if name.endswith(".rs"):
            found.add(name[:-3])
        elif os.path.isdir(os.path.join(ROOT, name)):
            found.add(name)
    return found


def main():
    mods = modules()
    problems = []
    for m in sorted(mods - LAYERS.keys()):
        problems.append(f"src/{m}: a top-level module without a layer: add it to LAYERS in scripts/layers.py")
    for dirpath, _, files in os.walk(ROOT):
        for f in sorted(files):
            if not f.endswith(".rs"):
                continue
            path = os.path.join(dirpath, f)
            rel = os.path.relpath(path, ROOT)
            top = rel.split(os.sep)[0]
            top = top[:-3] if top.endswith(".rs") else top
            if top in ("lib", "main") or top not in LAYERS:
                continue
            neutral = top in NEUTRAL and f != "tests.rs"
            with open(path, encoding="utf-8") as fh:
                for n, line in enumerate(fh, 1):
                    code = line.split("//")[0]
                    if line.strip() == "#[cfg(test)]":
                        neutral = False
                    word = PROVIDER_WORDS.search(code) if neutral else None
                    if word:
                        problems.append(
                            f"src/{rel}:{n}: {top} names the providers' {word.group(1)}: "
                            f"provider vocabulary stays in connectors and ingest"
                        )
                    for used in re.findall(r"\bcrate::(\w+)", code):
                        if used == top or used not in LAYERS:
                            continue
                        if LAYERS[used] >= LAYERS[top]:
                            problems.append(
                                f"src/{rel}:{n}: {top} (layer {LAYERS[top]}) uses {used} (layer {LAYERS[used]}): "
                                f"a module may use only lower layers"
                            )
    for p in problems:
        print(p)
    if problems:
        print(f"layers: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    print(
        f"layers: {len(mods)} top-level modules, every use goes down a layer, "
        f"no provider vocabulary in {', '.join(NEUTRAL)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
