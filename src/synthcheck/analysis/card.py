"""Model cards: what a model was trained on, how, by which command, and how well it did (Markdown + JSON)."""

from __future__ import annotations

import json
from pathlib import Path

from ..data.store import save_json
from .loso import conditions_table, reading_table


def _pct(x):
    return "n/a" if x is None else f"{100 * x:.2f}%"


def _policy(pre: dict, arch: dict | None = None) -> str:
    s = pre["image_size"]
    if pre["resize_policy"] == "tiles":
        n = pre.get("tiles", 1)
        rule = ("the logit of the mean tile probability" if (arch or {}).get("tile_rule") == "probability"
                else "the mean tile logit")
        return (f"a {n}×{n} grid of native-resolution {s}×{s} tiles (never resampled unless the image is smaller); "
                f"the score is {rule}")
    return f"{pre['resize_policy']} to {s}×{s}"


def write_model_card(model_dir: Path, config: dict, command: str | None = None, notes: str | None = None) -> None:
    model_dir = Path(model_dir)
    t, d = config.get("train", {}), config.get("data", {})
    card = {
        "model": config["arch"],
        "parameters": config.get("parameters"),
        "preprocess": config.get("preprocess"),
        "data": d,
        "training": {k: t.get(k) for k in ("epochs", "batch_size", "lr", "optimizer", "schedule", "augment", "seed")},
        "epoch_kept": config.get("epoch"),
        "train_time_s": config.get("train_time_s"),
        "temperature": config.get("temperature"),
        "threshold": config.get("threshold"),
        "threshold_rule": config.get("threshold_rule"),
        "val_metrics": config.get("val_metrics"),
        "test_metrics": config.get("test_metrics"),
        "command": command or config.get("command"),
        "git_commit": config.get("git_commit"),
        "hardware": config.get("hardware"),
        "synthcheck_version": config.get("synthcheck_version"),
        "notes": notes or config.get("notes"),
    }
    save_json(model_dir / "model_card.json", card)
    tm, vm = config.get("test_metrics") or {}, config.get("val_metrics") or {}
    lines = [
        f"# Model card: {config['arch']['name']}",
        "",
        f"- Architecture: `{config['arch']['name']}` ({config.get('parameters', 0):,} parameters), "
        f"ImageNet weights: {config['arch'].get('weights') or 'no'}, input resized in-model to: "
        f"{config['arch'].get('input_size') or 'native'}",
        f"- Preprocessing: decode → RGB → {_policy(config['preprocess'], config.get('arch'))} (synthcheck.data.preprocess)",
        f"- Training data: {', '.join(d.get('sources', []))} — {d.get('counts')} after "
        + (f"holding out a seeded {d['test_held_out']['fraction']} test part (stratified by "
           f"{d['test_held_out']['stratified_by']}) and " if d.get("test_held_out") else "")
        + f"a {t.get('val_fraction')} stratified validation split (seed {t.get('seed')}); fingerprint "
        f"`{d.get('fingerprint')}`" + ("; backbone frozen (linear probe)" if t.get("freeze_backbone") else ""),
        f"- Training: {t.get('epochs')} epochs max (kept epoch {config.get('epoch')}), {t.get('optimizer')} lr {t.get('lr')}, "
        f"{t.get('schedule')} schedule, batch {t.get('batch_size')}, augmentation {t.get('augment')}; "
        f"{config.get('train_time_s')} s of training",
        _calibration_line(config),
        f"- Command: `{command or config.get('command') or 'see config.json'}`",
        f"- Commit: {config.get('git_commit')}, synthcheck {config.get('synthcheck_version')}; "
        f"trained on: {config.get('hardware', 'not recorded')}",
        "",
        "## Figures",
        "",
        "| split | n | accuracy | ROC-AUC | AP | F1 | ECE |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, m in (("validation", vm), ("test", tm)):
        if m:
            f4 = [("-" if m.get(k) is None else f"{m[k]:.4f}") for k in ("roc_auc", "average_precision", "f1", "ece")]
            lines.append(f"| {name} | {m.get('n')} | {_pct(m.get('accuracy'))} | " + " | ".join(f4) + " |")
    if d.get("test_identical_to_train_or_val") is not None:
        lines += ["", f"Test files byte-identical to a training/validation file: {d['test_identical_to_train_or_val']} "
                      f"({'excluded' if d.get('excluded') else 'kept'})."]
    if config.get("crossval"):
        lines += crossval_section(config)
    if config.get("ablation"):
        lines += ablation_section(config["ablation"])
    if (model_dir / "attribution.json").exists():
        lines += attribution_section(json.loads((model_dir / "attribution.json").read_text()))
    lines += precision_section(config)
    if notes or config.get("notes"):
        lines += ["", "## Notes", "", notes or config.get("notes")]
    (model_dir / "MODEL_CARD.md").write_text("\n".join(lines) + "\n")


def precision_section(config: dict) -> list[str]:
    """What `--precision auto` (the default) picks, and what it was measured to change on this model's test split."""
    lines = ["", "## Precision", "",
             "Scored by default with `--precision auto`: bf16 autocast (channels-last) on GPUs and on CPUs with native "
             "bf16 (AMX or AVX512-BF16, read from /proc/cpuinfo), fp32 elsewhere and on the ONNX backend. The figures "
             "above were measured in fp32."]
    if config.get("cpu_backend") == "onnx-where-no-bf16":
        lines[-1] += (" On CPUs without native bf16 it is scored by default (`--backend auto`) with ONNX Runtime in fp32, "
                      "which its config names as its fastest CPU path there (`cpu_backend`): the same scores as "
                      "PyTorch fp32.")
    if config.get("cpu_backend") == "onnx":
        lines[-1] = ("On CPU this model is scored by default (`--backend auto`) with ONNX Runtime in fp32, which its "
                     "config names as its fastest CPU path (`cpu_backend`): the same scores as PyTorch fp32 (to 1e-4 in "
                     "logits), so the figures above hold as they are. On GPUs: bf16 autocast.")
    m = config.get("bf16_margin_measured")
    if config.get("bf16_margin") is not None and m:
        lines[-1] += (f" On CPUs with native bf16 (and OpenVINO installed) it is scored by default in bf16 with OpenVINO, "
                      f"and every image whose bf16 logit lies within {config['bf16_margin']} of a verdict edge again in fp32 "
                      f"(ONNX Runtime): fp32's verdicts at close to bf16's speed. The margin is {m['safety']}x the largest "
                      f"bf16-vs-fp32 logit difference on {m['images']} of the model's images ({m['max_abs_logit_diff']}; "
                      f"mean {m['mean_abs_logit_diff']}); {_pct(m['share_rescored'])} of them were scored twice, and bf16 "
                      f"alone would have changed {_pct(m['verdict_changed_by_bf16_alone'])} of their verdicts "
                      f"(`{m['command']}`).")
    pc = config.get("precision_check")
    if pc:
        lines[-1] += (f" On the {pc['set']} ({pc['n']} images), bf16 gives accuracy {_pct(pc['bf16']['accuracy'])} "
                      f"(fp32 {_pct(pc['fp32']['accuracy'])}), ROC-AUC {pc['bf16']['roc_auc']:.4f} (fp32 "
                      f"{pc['fp32']['roc_auc']:.4f}), the same verdict on {_pct(pc['same_verdict'])} of images, "
                      f"largest P(AI) difference {pc['max_abs_prob_diff']:.4f} (`{pc['command']}`).")
    return lines


def _limit_unit(config: dict, short: bool = False) -> str:
    """What the band's per-group limit was held on: each source group, or each family (crossval `limit_by`)."""
    if (config.get("abstain") or {}).get("limit_by") == "family":
        return "family" if short else "family (a generator family, e.g. all of FLUX, or one photo source)"
    return "group" if short else "source group"


def _calibration_line(config: dict) -> str:
    rule = (config.get("threshold_rule") or {}).get("rule", "default")
    head = (f"- Calibration: temperature {config.get('temperature', 1.0):.4f}; threshold {config.get('threshold', 0.5):.4f} "
            f"({rule})")
    a = config.get("abstain")
    if a:
        return (head + f"; verdict \"real\" at P(AI) ≤ {a['low']:.4f}, \"ai\" at ≥ {a['high']:.4f}, \"uncertain\" between "
                f"(the widest answering band with at most {100 * a['max_wrong_group']:.0f}% confidently wrong in every "
                f"{_limit_unit(config)} and {100 * a['max_wrong_pooled']:.0f}% overall). All three fitted on "
                f"{config.get('calibrated_on')}. Size and aspect warnings inform; they do not change the verdict.")
    return head + f", uncertain within ±{config.get('uncertain_band', 0):.2f}, fitted on the validation split"


def crossval_section(config: dict) -> list[str]:
    """The leave-sources-out table: each source group scored by a model that never saw it."""
    cv = config["crossval"]
    p = cv["pooled"]
    lines = ["", "## Leave-sources-out figures (generators and cameras the model never saw)", "",
             "Each source group was left out of training once and scored by a cross-validation model that never saw "
             "it (folds: " + "; ".join(", ".join(v) for v in cv["folds"].values()) + "). Verdicts at a band fitted on "
             "the other families' left-out scores (cross-fitted), so no group is judged by a band fitted on itself.", "",
             f"Pooled ROC-AUC {p['roc_auc']:.3f}; mean ROC-AUC over AI "
             f"{'families' if _limit_unit(config, True) == 'family' else 'groups'} "
             f"{p['mean_ai_group_roc_auc']:.3f}; answered {100 * p['coverage']:.1f}%, confidently wrong "
             f"{100 * p['confidently_wrong']:.1f}% (worst {_limit_unit(config, True)} "
             f"{100 * p['max_group_confidently_wrong']:.1f}%).", "",
             "| source group | n | ROC-AUC vs unseen real photos | answered | confidently wrong | called AI |",
             "|---|---|---|---|---|---|"]
    for g, r in sorted(cv["groups"].items(), key=lambda kv: (kv[1]["label"], kv[0])):
        auc = "-" if r.get("roc_auc") is None else f"{r['roc_auc']:.3f}"
        lines.append(f"| {g} | {r['n']} | {auc} | {100 * r['coverage']:.0f}% | {100 * r['confidently_wrong']:.0f}% | "
                     f"{100 * r['called_ai']:.0f}% |")
    lines += conditions_table(cv.get("conditions"))
    if config.get("unseen_reading"):
        r = config["unseen_reading"]
        lines += reading_table(r, config["temperature"])
        lines += ["", f"Every prediction carries its row of this table (`reading`), read off {r.get('source', 'left-out scores')}."]
    proxy = config.get("crossval_proxy")
    if proxy and proxy["epochs"] != proxy["final_epochs"]:
        lines += ["", f"The cross-validation models trained {proxy['epochs']} epochs, this model {proxy['final_epochs']}: "
                  "that the shorter proxy tracks the longer recipe was checked on one fold "
                  "(`scripts/fold_compare.py`)."]
    groups = (config.get("data") or {}).get("groups")
    if groups:
        lines += ["", "Training images per source group (this model): "
                  + ", ".join(f"{g} {n}" for g, n in sorted(groups.items())) + "."]
    return lines


def ablation_section(ab: dict) -> list[str]:
    """What each part of the training data buys, leave-sources-out (`scripts/ablation_table.py --write`)."""
    from .ablation import markdown

    return ["", "## What the training data buys (leave-sources-out ablation)", "",
            "The same recipe cross-validated on different training data; every row scores every source group with "
            "a model that never saw it, and fits its own operating point on its own left-out scores. The aligned "
            "pairs are training-only in every row.", "", markdown(ab["rows"]), "", f"Command: `{ab['command']}`."]


def attribution_section(a: dict) -> list[str]:
    """The attribution head's families and figures (`synthcheck attribution`)."""
    i = a["info"]
    fam = i.get("families_decided", {})
    rule = i["open_set"]["rule"]
    lines = ["", "## Which generator made it (attribution head)", ""] + naming_lines(i.get("naming_rule"))
    lines += [f"Families the head knows: {', '.join(f'{k} ({v})' for k, v in sorted(fam.get('known', {}).items()))}. Too thin to "
             f"name (under {fam.get('min_images')} images; answered \"unknown\"): "
             f"{', '.join(sorted(fam.get('too_thin_to_name', {}))) or 'none'}; unknown by configuration (unstated or mixed generators): "
             f"{', '.join(fam.get('unknown_groups', [])) or 'none'}. Mapping: "
             + ", ".join(f"{k} → {v}" for k, v in sorted(fam.get("mapping", {}).items())) + ".", "",
             f"Top-1 on held-out images of the known families (held-out images of the training collections: "
             f"this measures the collection as much as the generator; seeded split, stratified by family; "
             f"{i['n_test']} images): {100 * i['top1']:.1f}%. Open set ({rule}, threshold chosen to keep "
             f"{100 * i['test_named']:.0f}% of held-out known images named), leave-one-family-out:", "",
             "| rule | ROC-AUC known vs left-out | left-out answered \"unknown\" |", "|---|---|---|"]
    for r, f in i["open_set"]["figures"].items():
        lines.append(f"| {r}{' (used)' if r == rule else ''} | {f['roc_auc']:.3f} | {100 * f['unknown_rejected']:.0f}% |")
    by = i["open_set"]["figures"][rule].get("unknown_rejected_by_family", {})
    if by:
        lines += ["", "Per left-out family: " + ", ".join(f"{k} {100 * v:.0f}%" for k, v in sorted(by.items())) + "."]
    nested = i["open_set"].get("nested")
    if nested and nested.get("unknown_rejected") is not None:
        lines += ["", "The rows above chose the rule and C on the same runs they report. Nested (each family left out "
                  "of the choice too, the honest figure): " f"{100 * nested['unknown_rejected']:.0f}% of the left-out "
                  "families' images answered \"unknown\" with 80% of held-out known images named ("
                  + ", ".join(f"{k} {100 * v:.0f}%" for k, v in sorted(nested["unknown_rejected_by_family"].items()))
                  + ")."]
    if i.get("n_outlier_examples"):
        lines += ["", f"The head has an outlier class (outlier exposure) learned from {i['n_outlier_examples']} images of "
                  f"thin and unstated generators (C = {i.get('c')})."]
    if i.get("unknown_examples_rejected") is not None:
        lines += ["", "Thin and unstated generators answered \"unknown\" (each group scored by a head that never saw it): "
                  f"{100 * i['unknown_examples_rejected']:.0f}%."]
    return lines


def naming_lines(rule: dict | None) -> list[str]:
    """When a name is given from pixels, and how often it was right on collections and families the head (and
    the backbone it reads) never saw: first, because that is how a user meets it (`training.attribution_out`)."""
    if not rule:
        return []
    from .metrics import share_text

    lo = rule["left_out"]
    n, a = lo["nested"], lo["as_is"]
    said = (f"only {', '.join(rule['families'])}, at a family probability ≥ {rule['min_probability']} and P(AI) ≥ "
            f"{rule['min_p_ai']}" if rule["families"] else "no family: every pixel answer is \"unknown\"")
    validated = ", ".join(lo["candidates"]) or "none"
    return [f"**Named from pixels: {said}.** Families validated on a collection left out of the head and of the "
            f"backbone's training: {validated}; the others were learned from one collection each and are not named "
            "from pixels (a name learned from one collection is a collection detector: on other collections of the "
            "same family it cannot be checked, and on unseen families such names were wrong).", "",
            "On collections and families left out (each fold model scores what it never saw; real photos count "
            "when they reach \"can't tell\"):", "",
            "| names given by | right among named | real photos named |", "|---|---|---|",
            f"| the head with its open-set threshold only (before this rule) | {share_text(a['right'], a['named'])} | "
            f"{a['real_named']} of {a['real_uncertain']} |",
            f"| the rule, nested (each unit named by a rule fitted without it) | {share_text(n['right'], n['named'])} | "
            f"{n['real_named']} of {n['real_uncertain']} |", "",
            f"Report: `{rule.get('report', '')}`. Metadata names (C2PA, PNG parameters) are separate evidence with "
            "their own figures (docs/guides/metadata.md).", ""]
