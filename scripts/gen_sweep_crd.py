#!/usr/bin/env python3
"""Keep the sweep CRD's ``spec.template`` schema equal to the PreferenceTrainingJob spec schema.

``crds/prefops.dev_preferencetrainingsweeps.yaml`` is written by hand except the block between its
``BEGIN generated`` and ``END generated`` comment lines: that block is the ``spec`` schema of
``crds/prefops.dev_preferencetrainingjobs.yaml`` (one source of truth for the job schema; Kubernetes 1.20 CRDs have
no ``$ref``), with the template's own description.

    python scripts/gen_sweep_crd.py            # rewrite the block
    python scripts/gen_sweep_crd.py --check    # exit 1 when it is stale (tests run this)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
JOB_CRD = ROOT / "crds" / "prefops.dev_preferencetrainingjobs.yaml"
SWEEP_CRD = ROOT / "crds" / "prefops.dev_preferencetrainingsweeps.yaml"
BEGIN, END = "# BEGIN generated", "# END generated"
DESCRIPTION = (
    "The PreferenceTrainingJob spec every trial starts from (the job schema: see docs/spec-reference.md); each "
    "trial's parameters override it. The sweep sets output.uri to <output.uri>/<trial>, suspend to the sweep's, "
    "and drops ttlSecondsAfterFinished (trials live as long as the sweep). dataset.evalSplit is required: trials "
    "are ranked by an evaluation on it."
)


def template_schema() -> dict:
    crd = yaml.safe_load(JOB_CRD.read_text())
    spec = dict(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"])
    return {"description": DESCRIPTION, **{k: v for k, v in spec.items() if k != "description"}}


def render(text: str) -> str:
    lines = text.splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if line.strip().startswith(BEGIN))
    end = next(i for i, line in enumerate(lines) if line.strip().startswith(END))
    indent = " " * (len(lines[start]) - len(lines[start].lstrip()))
    dumped = yaml.safe_dump(template_schema(), sort_keys=False, width=110, allow_unicode=True)
    block = [f"{indent}{line}\n" if line else "\n" for line in dumped.splitlines()]
    return "".join(lines[: start + 1] + block + lines[end:])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only report a stale file; exit 1 when it is")
    args = parser.parse_args()
    text = SWEEP_CRD.read_text()
    expected = render(text)
    if args.check:
        if expected != text:
            sys.stderr.write(f"stale: {SWEEP_CRD.relative_to(ROOT)}: run python scripts/gen_sweep_crd.py\n")
            return 1
        return 0
    SWEEP_CRD.write_text(expected)
    return 0


if __name__ == "__main__":
    sys.exit(main())
