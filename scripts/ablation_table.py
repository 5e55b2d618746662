"""What the aligned pairs buy: leave-sources-out figures of several `synthcheck crossval` runs of one recipe,
trained on different data, side by side (issue "Aligned training pairs").

    synthcheck crossval configs/crossval_photo.toml --out runs/cv_both_social               # generated + pairs
    synthcheck crossval configs/crossval_photo.toml --out runs/cv_ai_social --no-pairs      # generated only
    synthcheck crossval configs/crossval_photo.toml --out runs/cv_pairs_social --no-train-ai  # pairs only
    python scripts/ablation_table.py "generated + pairs=runs/cv_both_social/crossval.json" \
        "generated only=runs/cv_ai_social/crossval.json" "pairs only=runs/cv_pairs_social/crossval.json" \
        --out reports/photo_v2/ablation

With --families (photo model v3's runs, `limit_by = "family"`), the columns are the issue's fixed families and the
JPEG 90 / 256-px copies:

    python scripts/ablation_table.py --families "v2.1 recipe=reports/photo_v3/ablation/v2_1_recipe/crossval.json" \
        ... --out reports/photo_v3/ablation

Every run scores every source group with a model that never saw it, so each row is what a user would get on
generators and cameras new to it; the pairs are training-only in every run (never a left-out group). Each row's
operating point is its own, fitted on its own left-out scores and cross-fitted by family, as the shipped model's.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from synthcheck.analysis.ablation import family_markdown, family_row, markdown, row


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="LABEL=path/to/crossval.json")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--families", action="store_true", help="v3 layout: rows by the fixed families, copies beside")
    ap.add_argument("--title", default=None, help="the table's heading")
    ap.add_argument("--write", type=Path, help="model directory: store the table in its config and rewrite its card")
    args = ap.parse_args()
    rows = []
    for spec in args.runs:
        label, path = spec.split("=", 1)
        rep = json.loads(Path(path).read_text())
        if args.families and "limit_groups" not in rep:
            raise SystemExit(f"{path}: no rows per family; --families needs runs with limit_by = \"family\"")
        rows.append((family_row if args.families else row)(label, rep))
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"command": "python scripts/ablation_table.py " + ("--families " if args.families else "")
              + (f'--title "{args.title}" ' if args.title else "") + " ".join(f'"{s}"' for s in args.runs)
              + f" --out {args.out}" + (f" --write {args.write}" if args.write else ""), "rows": rows}
    (args.out / "ablation.json").write_text(json.dumps(report, indent=2))
    md = family_markdown(rows) if args.families else markdown(rows)
    title = args.title or "Aligned pairs: leave-sources-out ablation"
    (args.out / "ablation.md").write_text(f"# {title}\n\n" + md + "\n")
    print(md)
    if args.write:
        from synthcheck.analysis.card import write_model_card
        from synthcheck.data.store import save_json

        config = json.loads((args.write / "config.json").read_text())
        config["ablation"] = report
        save_json(args.write / "config.json", config)
        write_model_card(args.write, config)


if __name__ == "__main__":
    main()
