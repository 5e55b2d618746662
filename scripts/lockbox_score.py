"""Log one lockbox score: the collections' ROC-AUCs of a `synthcheck evaluate` run on data/corpus/lockbox.

    synthcheck evaluate MODEL data/corpus/lockbox --out runs/lockbox/NAME
    python scripts/lockbox_score.py runs/lockbox/NAME --model "NAME (what it is)"
    python scripts/lockbox_score.py data/corpus/lockbox --panel MODEL --model "NAME (what it is)"   # + the panel
    python scripts/lockbox_score.py data/corpus/lockbox --gate "NAME" --baseline "V2.1 NAME" --baseline "V3 NAME"
                                          # reads the log only: over as many images as NAME's latest "as is" score

Appends to reports/lockbox/log.jsonl (every lockbox score ever taken, with the model and the date: the lockbox is
only honest while every look at it is on record) and rewrites reports/lockbox/lockbox.md from the whole log.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from synthcheck.analysis.lockbox import (lockbox_gate, log_markdown, log_score, panel_entries, panel_reading,
                                        panel_resave, panel_scores, reading_lines, score_run)
from synthcheck.analysis.resave import resave_lines

LOG = Path("reports/lockbox/log.jsonl")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("eval_dir", help="the --out folder of `synthcheck evaluate MODEL data/corpus/lockbox`")
    ap.add_argument("--model", help="what was scored, as the log should name it (required unless --gate)")
    ap.add_argument("--condition", default="as is", help="how the lockbox files were given (default: as is)")
    ap.add_argument("--log", type=Path, default=LOG)
    ap.add_argument("--panel", metavar="MODEL", help="instead of an evaluate run: score MODEL on the lockbox (the "
                    "eval_dir argument) as is and under the everyday panel, logging each copy and the worst of panel")
    ap.add_argument("--gate", metavar="CANDIDATE", help="score nothing: read the log and apply issue 37's lockbox gate "
                    "to CANDIDATE (a --model name already logged as is and under the panel) against --baseline")
    ap.add_argument("--baseline", action="append", default=[], help="a logged model name (give two: v2.1 and v3)")
    a = ap.parse_args()
    if a.gate:
        import json

        entries = [json.loads(x) for x in a.log.read_text(encoding="utf-8").splitlines() if x.strip()]
        try:
            g = lockbox_gate(entries, a.gate, a.baseline)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        for cond, v in g["by_condition"].items():
            means = ", ".join(f"{b} {m:.3f}" for b, m in v["baseline_means"].items())
            short = "; ".join(f"{c} {x['candidate']:.3f} vs {x['better_baseline']:.3f}"
                              for c, x in v["collections_short"].items()) or "none"
            print(f"{cond}: candidate {v['candidate_mean']:.3f} against {means}; collections more than "
                  f"{g['margin']:.2f} below the better baseline: {short} -> {'pass' if v['passed'] else 'FAIL'}")
        print(f"lockbox gate over {g['n']} images: {'PASSED' if g['passed'] else 'FAILED'}")
        return 0 if g["passed"] else 2
    if not a.model:
        ap.error("--model is required when scoring")
    try:
        if a.panel:
            from synthcheck import Detector
            from synthcheck.data.transforms import PANEL

            det = Detector.load(a.panel)
            scores = panel_scores(det, a.eval_dir, ["as is"] + PANEL)
            entries = panel_entries(scores, a.model, a.eval_dir)
            for entry in entries:  # logged before the report is written: a look at the lockbox is never lost
                log_score(entry, a.log)
            logged = True
            slug = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in a.model)[:80]
            out = a.log.parent / "panel" / f"{slug}.md"
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(f"# Lockbox under the everyday panel: {a.model}\n\nScored {entries[0]['date']} by "
                           f"`python scripts/lockbox_score.py {a.eval_dir} --panel {a.panel} --model ...` (logged in "
                           "log.jsonl). Re-saved the same way: each collection's paired median shift of P(AI) and "
                           "ROC-AUC change (an AI collection against all the lockbox's real photos, a real source "
                           "against all its AI images).\n"
                           + "\n".join(resave_lines(panel_resave(scores), "collection")
                                       + reading_lines(panel_reading(scores, det.reading, det.temperature),
                                                       det.temperature)) + "\n", encoding="utf-8")
            print(f"re-save and reading checks: {out}")
        else:
            entries, logged = [score_run(a.eval_dir, a.model, a.condition)], False
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if not logged:
        for entry in entries:
            log_score(entry, a.log)
    a.log.with_name("lockbox.md").write_text(
        "# Lockbox scores\n\nEvery score ever taken on the lockbox (`data/corpus/lockbox`, built by `synthcheck "
        "build-data`), in the order taken. A collection's ROC-AUC: an AI collection against all the lockbox's real "
        "photos, a real source against all its AI images. Written by scripts/lockbox_score.py from log.jsonl. Two "
        "collections left the lockbox on 2026-12-07 after review (docs/data-card.md): eebv-gpt2 (it imports samples of "
        "a held-out gallery; in the rows with n = 131) and kolors-repo-mjv6 (it shares reference images and prompts "
        "with Kolors training images; in the rows with n = 131 and 122). petersteinercode-mj7 (Midjourney V7) took "
        "its place: the rows with n = 215 score today's lockbox. Per-collection re-save and reading checks of each "
        "panel run: panel/.\n\n"
        + log_markdown(a.log), encoding="utf-8")
    for entry in entries:
        print(f"{entry['model']}, {entry['condition']}: pooled {entry['pooled_roc_auc']:.3f}, mean over collections "
              f"{entry['mean_collection_roc_auc']:.3f} ({entry['n']} images); logged in {a.log}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
