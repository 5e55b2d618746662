"""Log one lockbox score: the collections' ROC-AUCs of a `synthcheck evaluate` run on data/corpus/lockbox.

    synthcheck evaluate MODEL data/corpus/lockbox --out runs/lockbox/NAME
    python scripts/lockbox_score.py runs/lockbox/NAME --model "NAME (what it is)"
    python scripts/lockbox_score.py data/corpus/lockbox --panel MODEL --model "NAME (what it is)"   # + the panel

Appends to reports/lockbox/log.jsonl (every lockbox score ever taken, with the model and the date: the lockbox is
only honest while every look at it is on record) and rewrites reports/lockbox/lockbox.md from the whole log.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from synthcheck.analysis.lockbox import log_markdown, log_score, panel_entries, panel_scores, score_run

LOG = Path("reports/lockbox/log.jsonl")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("eval_dir", help="the --out folder of `synthcheck evaluate MODEL data/corpus/lockbox`")
    ap.add_argument("--model", required=True, help="what was scored, as the log should name it")
    ap.add_argument("--condition", default="as is", help="how the lockbox files were given (default: as is)")
    ap.add_argument("--log", type=Path, default=LOG)
    ap.add_argument("--panel", metavar="MODEL", help="instead of an evaluate run: score MODEL on the lockbox (the "
                    "eval_dir argument) as is and under the everyday panel, logging each copy and the worst of panel")
    a = ap.parse_args()
    try:
        if a.panel:
            from synthcheck import Detector
            from synthcheck.data.transforms import PANEL

            scores = panel_scores(Detector.load(a.panel), a.eval_dir, ["as is"] + PANEL)
            entries = panel_entries(scores, a.model, a.eval_dir)
        else:
            entries = [score_run(a.eval_dir, a.model, a.condition)]
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for entry in entries:
        log_score(entry, a.log)
    a.log.with_name("lockbox.md").write_text(
        "# Lockbox scores\n\nEvery score ever taken on the lockbox (`data/corpus/lockbox`, built by `synthcheck "
        "build-data`), in the order taken. A collection's ROC-AUC: an AI collection against all the lockbox's real "
        "photos, a real source against all its AI images. Written by scripts/lockbox_score.py from log.jsonl. The rows "
        "with n = 131 include eebv-gpt2, taken out of the lockbox on 2026-12-07 after review (it imports samples of a "
        "held-out gallery; see docs/data-card.md); later rows score the lockbox without it.\n\n"
        + log_markdown(a.log), encoding="utf-8")
    for entry in entries:
        print(f"{entry['model']}, {entry['condition']}: pooled {entry['pooled_roc_auc']:.3f}, mean over collections "
              f"{entry['mean_collection_roc_auc']:.3f} ({entry['n']} images); logged in {a.log}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
