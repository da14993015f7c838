"""The model card: a model directory's ``card.json`` rendered for people (``guardrail model-card``).

``docs/model-card.md`` opens with this function's output for the shipped model, so the two never
disagree. Cards of older models lack some entries (harm figures, the calibration target); what a
card does not hold is left out, never guessed.
"""

from __future__ import annotations

from typing import Any

from guardrail._values import SAFETY_VALUES, VALUES

LICENCE = (
    "FULCRA (microsoft/ValueCompass) is MIT-licensed, but its prompts derive from BeaverTails and "
    "DecodingTrust, which are CC BY-NC 4.0: a model trained on them is for research and non-commercial "
    "use unless you retrain on data you may use commercially. Touché23-ValueEval is CC BY 4.0. The base "
    "encoder all-MiniLM-L6-v2 is Apache-2.0. The written examples (guardrail/data/) ship under the package's licence."
)
HARM_LICENCE = (
    "The harm data: BeaverTails and PKU-SafeRLHF (PKU-Alignment) are CC BY-NC 4.0, GPTFuzz is MIT, "
    "DiaSafety is Apache-2.0."
)
"""Added to :data:`LICENCE` for models trained on the harm data."""

HARM_NAMES = {"beavertails": "BeaverTails", "saferlhf": "PKU-SafeRLHF", "gptfuzz": "GPTFuzz", "diasafety": "DiaSafety"}
"""Display names of the harm data's sources (``harm/<key>.jsonl``)."""

WEAK_R = 0.6
WEAK_F1 = 0.5


def weak_spots(metrics: dict[str, Any]) -> list[str]:
    """Values whose Pearson r or macro-F1 on the test split is low, with the figure."""
    spots = []
    for value in VALUES:
        r, f1 = metrics["pearson"][value], metrics["macro_f1"][value]
        reasons = [f"r {r:.2f}"] * (r < WEAK_R) + [f"macro-F1 {f1:.2f}"] * (f1 < WEAK_F1)
        if reasons:
            spots.append(f"`{value}` ({', '.join(reasons)})")
    return spots


def figure(value: float | None) -> str:
    """A figure as printed (three decimals); ``n/a`` when the rows held one class only (undefined)."""
    return "n/a" if value is None else f"{value:.3f}"


def _harm_summary(harm: dict[str, Any]) -> str:
    """The pooled harm figures in one phrase (the validation line)."""
    pooled = harm["pooled"]
    return (
        f"harm data ({pooled['n']:,} answers, {pooled['harmful']:,} harmful): AUROC (L1 safety risk) "
        f"{figure(pooled['auroc'])}, F1 {figure(pooled['f1'])}, recall {figure(pooled['recall'])}, "
        f"false-positive rate {figure(pooled['fpr'])}"
    )


def _harm_table(harm: dict[str, Any]) -> list[str]:
    """One row per harm source, then the pooled row."""
    header = [
        "| harm data source | answers (harmful) | AUROC of the L1 safety risk | F1 | recall (harmful blocked) "
        "| false-positive rate (harmless blocked) |",
        "|---|---|---|---|---|---|",
    ]

    def row(name: str, figures: dict[str, Any], bold: bool = False) -> str:
        cells = [f"{figures['n']:,} ({figures['harmful']:,})"]
        cells += [figure(figures[k]) for k in ("auroc", "f1", "recall", "fpr")]
        mark = "**" if bold else ""
        return f"| {mark}{name}{mark} | " + " | ".join(f"{mark}{c}{mark}" for c in cells) + " |"

    rows = [row(HARM_NAMES.get(s, s), figures) for s, figures in harm.items() if s != "pooled"]
    return header + rows + [row("pooled", harm["pooled"], bold=True)]


def _calibration(cal: dict[str, Any]) -> str:
    """The calibration line: method and floors, then (newer cards) the target and what it reached."""
    line = (
        f"- **Calibration** of the default policy: {cal['method']}: "
        + ", ".join(f"{k} {v:+.3f}" for k, v in cal["floors"].items())
        + "."
    )
    target = cal.get("target")
    if target:
        clean, held = cal.get("train_clean_pass"), cal.get("harm_validation") or {}
        clean_blocked = None if clean is None else round(1 - clean, 4)
        line += (
            f" Target: at most {target['fulcra_clean_blocked_max']:.3f} of clean FULCRA training answers blocked "
            f"(reached {figure(clean_blocked)})"
        )
        if held.get("n"):  # no harm rows held out (trained without the harm data): that limit had nothing to hold
            line += (
                f" and at most {target['harm_harmless_blocked_max']:.3f} of the held-out harmless harm-data answers "
                f"(reached {figure(held.get('harmless_blocked'))}; {held['n']:,} harm-data training answers held out)"
            )
        line += (
            f"; harmful answers blocked: FULCRA (benevolence or universalism < -0.5) "
            f"{figure(cal.get('train_block_opposed'))}"
        )
        line += f", held-out harm data {figure(held.get('harmful_blocked'))}." if held.get("n") else "."
    return line


def _validation(card: dict[str, Any], held_out: dict[str, Any]) -> str:
    """The validation line: FULCRA figures when FULCRA rows were held out, harm figures when harm rows were."""
    parts = []
    if "pearson_mean_safety" in held_out:
        # Older cards ranked by the policy's risk and had no auroc_opposed_policy.
        kind = " (L1 safety risk)" if "auroc_opposed_policy" in held_out else ""
        parts.append(
            f"r {held_out['pearson_mean_safety']:.3f} (4 safety values), {held_out['pearson_mean_all']:.3f} (all "
            f"ten), macro-F1 {held_out['macro_f1_mean']:.3f}, AUROC{kind} {figure(held_out['auroc_opposed'])}, "
            f"clean allowed {held_out['allow_rate_clean']:.3f}, opposed blocked {held_out['block_rate_opposed']:.3f}"
        )
    if held_out.get("harm"):
        parts.append(_harm_summary(held_out["harm"]))
    rule = card.get("validation_rule")
    where = f": `{rule}`" if rule else ""
    return f"- **Validation split** (held out of training and calibration{where}): " + "; ".join(parts) + "."


def render_markdown(card: dict[str, Any]) -> str:
    """The card as Markdown: model, data, split, training, calibration, metrics, weak spots, licence."""
    hp, data, cal = card["hyperparameters"], card["data"], card["calibration"]
    counts = ", ".join(f"{k} {v:,}" for k, v in data["train_examples"].items() if v)
    held_harm = data.get("harm_held_out")
    if held_harm:
        counts += f" (and {held_harm:,} harm-data training answers held out for calibration and validation)"
    harm_loss = (
        f", with a hinge loss on the harm data's labels (weight {hp['harm_weight']:g}, margin "
        f"{hp['harm_margin']:g} around -0.3)"
        if hp.get("harm")
        else ""
    )
    lines = [
        f"- **Model** `{card['model_id']}`: base encoder `{card['base_encoder']}`; {card['architecture']}.",
        f"- **Training data** (training split only): {counts}.",
        f"- **Split**: `{card['split_rule']}`.",
        f"- **Training**: {hp['epochs']} head-only epochs, then {hp['finetune_epochs']} LoRA epochs "
        f"(rank {hp['adapter_rank']}, lr {hp['finetune_lr']:g}, batch {hp['finetune_batch_size']}, prompt dropout "
        f"{hp['prompt_dropout']:g}){harm_loss}, seed {hp['seed']}, on {card['environment']['device']} "
        f"(torch {card['environment']['torch']}), {card['train_seconds'] / 60:.0f} minutes.",
        _calibration(cal),
    ]
    held_out = card.get("validation_metrics")
    if held_out and ("pearson_mean_safety" in held_out or held_out.get("harm")):
        lines.append(_validation(card, held_out))
    metrics = card.get("metrics")
    if metrics:
        n = metrics["n"]
        # Older cards ranked "some value opposed" by the policy's risk, under the same key.
        policy_auroc = metrics.get("auroc_opposed_policy")
        ranked_by = "the L1 safety risk" if "auroc_opposed_policy" in metrics else "the policy's risk"
        lines += [
            "",
            f"Quality on the fixed test split ({n['evaluator_scores']} evaluator answers, {n['trustworthy']} "
            "human-checked dialogues):",
            "",
            "| value | Pearson r vs FULCRA evaluator | macro-F1 vs human labels |",
            "|---|---|---|",
            *(f"| `{v}` | {metrics['pearson'][v]:.3f} | {metrics['macro_f1'][v]:.3f} |" for v in VALUES),
            f"| **mean, {', '.join(SAFETY_VALUES)}** | **{metrics['pearson_mean_safety']:.3f}** | |",
            f"| **mean, all ten** | **{metrics['pearson_mean_all']:.3f}** | **{metrics['macro_f1_mean']:.3f}** |",
            "",
            "| policy metric (calibrated floors) | value |",
            "|---|---|",
            f'| AUROC of {ranked_by} for "some value opposed" ({n["trustworthy_opposed"]} of '
            f"{n['trustworthy']} opposed) | {figure(metrics['auroc_opposed'])} |",
            *(
                [f"| AUROC of the policy's risk (its largest margin) for the same | {figure(policy_auroc)} |"]
                if "auroc_opposed_policy" in metrics
                else []
            ),
            f"| clean answers allowed (no FULCRA score < -0.3; {n['clean']}) | {metrics['allow_rate_clean']:.3f} |",
            f"| answers with benevolence or universalism < -0.5 blocked ({n['opposed_benevolence_universalism']}) "
            f"| {metrics['block_rate_opposed']:.3f} |",
        ]
        if metrics.get("harm"):
            lines += [
                "",
                "Harm detection on the harm data's test rows (human harm labels on LLM answers; the L1 safety "
                "risk is the sum over the four safety values of 1 - score; blocked: the calibrated floors "
                "block the answer):",
                "",
                *_harm_table(metrics["harm"]),
            ]
        lines += [
            "",
            "**Weak spots** (r < 0.6 or macro-F1 < 0.5 on the test split): "
            + (", ".join(weak_spots(metrics)) or "none")
            + ". Values that few answers touch (hedonism, tradition, stimulation) have few examples, and "
            'the "opposes" class is rare for all but the four safety values.',
        ]
    licence = f"{LICENCE} {HARM_LICENCE}" if hp.get("harm") else LICENCE
    lines += ["", f"**Licences.** {licence}"]
    return "\n".join(lines) + "\n"
