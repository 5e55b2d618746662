"""Give a model the table of what its scores meant on sources it never saw (`unseen_reading`), taken from a crossval
report of its recipe, and rewrite its card. `crossval --final` does this by itself for the models it trains; this is
for a model trained before the table existed (the bundled photo model v2.1):

    python scripts/unseen_reading.py reports/photo_v3/ablation/v2_1_recipe/crossval.json src/synthcheck/weights/photo \
        --source "v2.1's recipe re-run on the v3 pool (reports/photo_v3/ablation/v2_1_recipe)" --write

The table is keyed on the centred logit, the scale the fold models and the shipped model share, so it reads the
model's own P(AI) at its own temperature. Without --write it prints the table as the model would read it.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("report", type=Path, help="crossval.json (synthcheck crossval / stack)")
    ap.add_argument("model", type=Path, help="model directory (config.json)")
    ap.add_argument("--source", required=True, help="where the left-out scores came from, in words for the card")
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args(argv)

    from synthcheck.analysis.card import write_model_card
    from synthcheck.analysis.loso import reading_table
    from synthcheck.data.store import save_json

    report = json.loads(args.report.read_text())
    if "unseen_reading" not in report:
        sys.exit(f"{args.report}: no unseen_reading in it; rerun the crossval (finished folds are reused)")
    config = json.loads((args.model / "config.json").read_text())
    reading = {**report["unseen_reading"], "source": f"leave-sources-out scores of {args.source}",
               "command": "python " + " ".join(shlex.quote(a) for a in sys.argv)}
    print("\n".join(reading_table(reading, config.get("temperature", 1.0))))
    if args.write:
        config["unseen_reading"] = reading
        save_json(args.model / "config.json", config)
        write_model_card(args.model, config)
        print(f"wrote {args.model / 'config.json'} and its card")


if __name__ == "__main__":
    main()
