"""The model card: a model directory's ``card.json`` rendered for people (``guardrail model-card``).

The README's model-card section is this function's output for the shipped model, so the two never
disagree.
"""

from __future__ import annotations

from typing import Any

from guardrail._values import SAFETY_VALUES, VALUES

LICENCE = (
    "FULCRA (microsoft/ValueCompass) is MIT-licensed, but its prompts derive from BeaverTails and "
    "DecodingTrust, which are CC BY-NC 4.0: a model trained on them is for research and non-commercial "
    "use unless you retrain on data you may use commercially. Touché23-ValueEval is CC BY 4.0. The base "
    "encoder all-MiniLM-L6-v2 is Apache-2.0. The project's own examples (guardrail/data/) are ours."
)

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


def render_markdown(card: dict[str, Any]) -> str:
    """The card as Markdown: model, data, split, training, calibration, metrics, weak spots, licence."""
    hp, data, cal = card["hyperparameters"], card["data"], card["calibration"]
    counts = ", ".join(f"{k} {v:,}" for k, v in data["train_examples"].items() if v)
    lines = [
        f"- **Model** `{card['model_id']}`: base encoder `{card['base_encoder']}`; {card['architecture']}.",
        f"- **Training data** (training split only): {counts}.",
        f"- **Split**: `{card['split_rule']}`.",
        f"- **Training**: {hp['epochs']} head-only epochs, then {hp['finetune_epochs']} LoRA epochs "
        f"(rank {hp['adapter_rank']}, lr {hp['finetune_lr']:g}, batch {hp['finetune_batch_size']}, prompt dropout "
        f"{hp['prompt_dropout']:g}), seed {hp['seed']}, on {card['environment']['device']} "
        f"(torch {card['environment']['torch']}), {card['train_seconds'] / 60:.0f} minutes.",
        f"- **Calibration** of the default policy: {cal['method']}: "
        + ", ".join(f"{k} {v:+.3f}" for k, v in cal["floors"].items())
        + ".",
    ]
    held_out = card.get("validation_metrics")
    if held_out:
        auroc = "n/a" if held_out["auroc_opposed"] is None else f"{held_out['auroc_opposed']:.3f}"
        lines.append(
            f"- **Validation split** (held out of training and calibration: `{card['validation_rule']}`): "
            f"r {held_out['pearson_mean_safety']:.3f} (4 safety values), {held_out['pearson_mean_all']:.3f} (all "
            f"ten), macro-F1 {held_out['macro_f1_mean']:.3f}, AUROC {auroc}, clean allowed "
            f"{held_out['allow_rate_clean']:.3f}, opposed blocked {held_out['block_rate_opposed']:.3f}."
        )
    metrics = card.get("metrics")
    if metrics:
        n = metrics["n"]
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
            f'| AUROC of the policy\'s risk for "some value opposed" ({n["trustworthy_opposed"]} of '
            f"{n['trustworthy']} opposed) | {metrics['auroc_opposed']:.3f} |",
            f"| clean answers allowed (no FULCRA score < -0.3; {n['clean']}) | {metrics['allow_rate_clean']:.3f} |",
            f"| answers with benevolence or universalism < -0.5 blocked ({n['opposed_benevolence_universalism']}) "
            f"| {metrics['block_rate_opposed']:.3f} |",
            "",
            "**Weak spots** (r < 0.6 or macro-F1 < 0.5 on the test split): "
            + (", ".join(weak_spots(metrics)) or "none")
            + ". Values that few answers touch (hedonism, tradition, stimulation) have few examples, and "
            'the "opposes" class is rare for all but the four safety values.',
        ]
    lines += ["", f"**Licences.** {LICENCE}"]
    return "\n".join(lines) + "\n"
