"""rlx-compare: a results table and plots across MLflow runs, grouped by config keys.

Selects runs from any MLflow tracking store (MLflow's own query API), groups them by config
keys (the flattened params, e.g. ``algorithm.name``), and writes one row per group with each
value as mean ± standard error over the group's runs (seeds):

    rlx-compare --sweep-id 2025-11-27_paper
    rlx-compare --experiment arith --group-by algorithm.name,algorithm.regulator.zeta_max
    python -m rlx.compare --filter "params.seed != '0'" --k 4 8 --no-summary-run

Output: a terminal table, ``results.md``, ``results.csv`` (one row per group), ``runs.csv``
(one row per selected run) and PNG plots in ``--out``; unless ``--no-summary-run``, all of it
logged as artifacts: on the sweep's parent run (rlx.sweep) for ``--sweep-id`` of a sweep that has
one, else of a new run in the MLflow experiment ``rlx-compare``.

Exit codes: 0 done; 1 nothing selected (or no store / unknown experiment); 2 bad arguments
(e.g. an invalid filter string).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import shlex
import sys
from pathlib import Path
from typing import Callable

from rlx import plots
from rlx.results_table import (MISSING, RunRecord, canonical_metric, csv_rows, group_label, group_of, natural_key, pass_ks_logged, pass_ks_to_show, present_columns, render_markdown, render_text, run_csv_rows, summarize, table_cells, table_columns, write_csv)
from rlx.store import ensure_experiment, sqlite_path
from rlx.sweep import find_parent

DEFAULT_TRACKING_URI = "sqlite:///outputs/mlflow.db"
DEFAULT_GROUP_BY = "algorithm.name,precision.name"
SUMMARY_EXPERIMENT = "rlx-compare"


# Metrics whose whole history is fetched: the plots' curves and the run-mean columns.
HISTORY_METRICS = (
    "train/entropy",
    "train/reward_mean",
    "train/entropy_pred_delta",
    "train/entropy_meas_delta",
    "train/clipfrac_low",
    "train/clipfrac_high",
    "precision/clip_flip_frac",
    "precision/clip_flip_lowering_frac",
    "precision/ratio_bias",
    "precision/logp_mismatch_mean",
    "control/zeta",
    "control/eps_high",
    "control/entropy_coef",
)


class UsageError(Exception):
    """A selection the user has to fix (bad filter, unknown experiment, missing store)."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


# ---------------------------------------------------------------------------------------------
# Selection (MLflow query API)
# ---------------------------------------------------------------------------------------------
def _quote(value: str) -> str:
    """An MLflow filter string literal (MLflow has no escapes: pick the quote not in value)."""
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    raise UsageError(f"cannot filter on a value containing both quote kinds: {value}", 2)


def build_filter(
    sweep_id: str | None, tags: list[tuple[str, str]], user_filter: str | None,
    include_unfinished: bool,
) -> str:
    """The MLflow filter string of a selection: clauses joined by AND."""
    clauses = []
    if not include_unfinished:
        clauses.append("attributes.status = 'FINISHED'")
    if sweep_id:
        clauses.append(f"tags.sweep_id = {_quote(sweep_id)}")
    clauses += [f"tags.`{k}` = {_quote(v)}" for k, v in tags]
    if user_filter and user_filter.strip():
        clauses.append(user_filter.strip())
    return " AND ".join(clauses)


def parse_tag(text: str) -> tuple[str, str]:
    """``"KEY=VALUE"`` -> ``(KEY, VALUE)`` (argparse type of ``--tag``)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def describe_selection(args) -> str:
    """One line saying what was asked for, e.g. ``experiments arith, sweep_id=s1``."""
    parts = ["experiments " + (", ".join(args.experiment) if args.experiment
                               else f"all (but {SUMMARY_EXPERIMENT})")]
    if args.sweep_id:
        parts.append(f"sweep_id={args.sweep_id}")
    parts += [f"tag {k}={v}" for k, v in args.tag]
    if args.filter:
        parts.append(f"filter {args.filter!r}")
    parts.append("all statuses" if args.include_unfinished else "finished runs only")
    return ", ".join(parts)


def resolve_experiments(client, names: list[str], uri: str) -> list:
    """The experiments named, or every active one but ``rlx-compare``'s when none is named."""
    if not names:
        return [e for e in client.search_experiments() if e.name != SUMMARY_EXPERIMENT]
    found = []
    for name in names:
        exp = client.get_experiment_by_name(name)
        if exp is None:
            known = ", ".join(sorted(e.name for e in client.search_experiments())) or "none"
            raise UsageError(
                f"no experiment named {name!r} in {uri} (experiments there: {known})", 1)
        found.append(exp)
    return found


def search_all_runs(client, experiment_ids: list[str], filter_string: str,
                    user_filter: str | None = None) -> list:
    """Every run of the experiments matching ``filter_string`` (all result pages); an invalid
    filter raises UsageError naming ``user_filter`` (the --filter part) when given."""
    from mlflow.exceptions import MlflowException

    runs, token = [], None
    while True:
        try:
            page = client.search_runs(experiment_ids, filter_string=filter_string,
                                      max_results=1000, page_token=token)
        except MlflowException as exc:
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
            what = f"--filter {user_filter!r}" if user_filter else f"filter {filter_string!r}"
            raise UsageError(f"invalid {what}: {first_line}", 2) from None
        runs += list(page)
        token = page.token
        if not token:
            return runs


def load_record(client, run, experiment_name: str, group_by: list[str]) -> RunRecord:
    """A RunRecord of an MLflow run: final values from the run, and the histories of the
    ``HISTORY_METRICS`` it logged (one ``get_metric_history`` call each)."""
    final = {canonical_metric(k): v for k, v in run.data.metrics.items()}
    history = {
        m: sorted((int(x.step), float(x.value))
                  for x in client.get_metric_history(run.info.run_id, m))
        for m in HISTORY_METRICS if m in final
    }
    return RunRecord(
        run_id=run.info.run_id,
        experiment=experiment_name,
        run_name=run.info.run_name or "",
        group=group_of(run.data.params, run.data.tags, group_by),
        final=final,
        history=history,
    )


# ---------------------------------------------------------------------------------------------
# Summary run
# ---------------------------------------------------------------------------------------------
def summary_artifact_location(uri: str, experiments: list) -> str | None:
    """Where a new ``rlx-compare`` experiment keeps artifacts: next to the compared runs'.

    For a database store: a sibling ``rlx-compare`` folder when the first selected
    experiment's artifact location is a per-experiment folder (named by its id or name),
    else that same location (run artifacts sit in per-run-id subfolders, so sharing is safe).
    A server or file store chooses for itself (None).
    """
    if not uri.startswith(("sqlite:", "postgresql", "mysql", "mssql")) or not experiments:
        return None
    exp = experiments[0]
    loc = (exp.artifact_location or "").rstrip("/")
    if not loc:
        return None
    parent, _, last = loc.rpartition("/")
    if parent and last in (str(exp.experiment_id), exp.name):
        return f"{parent}/{SUMMARY_EXPERIMENT}"
    return loc


def log_summary_run(client, uri: str, out_dir: Path, tags: dict[str, str], params: dict[str, str],
                    artifact_location: str | None) -> str:
    """Log everything in ``out_dir`` as artifacts of a new run in experiment ``rlx-compare``
    (created if needed, safely across processes); the run ends FAILED if logging fails.
    Returns the run id."""
    exp_id = ensure_experiment(uri, SUMMARY_EXPERIMENT, artifact_location)
    run = client.create_run(exp_id, run_name=f"compare-{out_dir.name}", tags=tags)
    run_id = run.info.run_id
    try:
        for k, v in params.items():
            client.log_param(run_id, k, v)
        client.log_artifacts(run_id, str(out_dir))
    except BaseException:
        client.set_terminated(run_id, status="FAILED")
        raise
    client.set_terminated(run_id, status="FINISHED")
    return run_id


def log_on_parent(client, run_id: str, out_dir: Path, tags: dict[str, str]) -> None:
    """Log everything in ``out_dir`` as artifacts (under ``compare/``) of a sweep's parent run,
    with ``tags`` saying how the table was made (a later comparison replaces them)."""
    for key, value in tags.items():
        if key != "sweep_id":  # the parent must not be selected as one of its sweep's runs
            client.set_tag(run_id, key, value)
    client.log_artifacts(run_id, str(out_dir), "compare")


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rlx-compare",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Compare MLflow runs: one row per group of runs (e.g. algorithm x\n"
        "precision), each value mean ± standard error over the group's runs (seeds).\n"
        "Writes results.md, results.csv, runs.csv and PNG plots to --out and logs them\n"
        "on the sweep's parent run (--sweep-id of an rlx-train --multirun sweep), else\n"
        f"to a summary run in the MLflow experiment '{SUMMARY_EXPERIMENT}'.",
        epilog="Selection options combine with AND. 'final' = a run's last logged value\n"
        "(highest step). Exit codes: 0 done, 1 nothing selected, 2 bad arguments.\n\n"
        "examples:\n"
        "  rlx-compare --sweep-id 2025-11-27_paper\n"
        "  rlx-compare --experiment expression --group-by "
        "algorithm.name,algorithm.regulator.zeta_max\n"
        "  rlx-compare --filter \"params.seed != '0'\" --k 4 8 --no-summary-run",
    )
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else "
                   f"{DEFAULT_TRACKING_URI})")
    p.add_argument("--experiment", action="append", default=[], metavar="NAME",
                   help="experiment name; repeatable (default: all experiments but "
                   f"'{SUMMARY_EXPERIMENT}')")
    p.add_argument("--sweep-id", default=None, help="only runs tagged sweep_id=SWEEP_ID")
    p.add_argument("--tag", action="append", default=[], type=parse_tag, metavar="KEY=VALUE",
                   help="only runs with this tag value; repeatable")
    p.add_argument("--filter", default=None, metavar="FILTER",
                   help="an MLflow search filter, e.g. \"params.`algorithm.name` = 'grpo'\" or "
                   "\"metrics.`eval/pass_at_1` > 0.5\"")
    p.add_argument("--include-unfinished", action="store_true",
                   help="also select RUNNING, FAILED and KILLED runs (default: FINISHED only)")
    p.add_argument("--group-by", default=DEFAULT_GROUP_BY, metavar="KEYS",
                   help="comma-separated config keys (flattened params, e.g. algorithm.name, "
                   f"seed, algorithm.regulator.zeta_max); default {DEFAULT_GROUP_BY}")
    p.add_argument("--k", nargs="+", type=int, default=None, metavar="K",
                   help="pass@k columns to show (default: the largest k logged)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="output folder (default: outputs/compare/<timestamp>)")
    p.add_argument("--no-summary-run", action="store_true",
                   help="do not log the results as a run in MLflow")
    return p


def run_compare(args, echo: Callable[[str], None] = print) -> int:
    """The CLI's work with parsed ``args``; raises UsageError for selection problems."""
    from mlflow import MlflowClient

    uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    db = sqlite_path(uri)
    if db is not None and not db.exists():
        raise UsageError(f"no MLflow store at {db} (tracking URI {uri}); pass --tracking-uri "
                         "or set MLFLOW_TRACKING_URI", 1)
    group_by = [k.strip() for k in args.group_by.split(",") if k.strip()]
    if not group_by:
        raise UsageError("--group-by needs at least one key", 2)

    client = MlflowClient(tracking_uri=uri)
    experiments = resolve_experiments(client, args.experiment, uri)
    filter_string = build_filter(args.sweep_id, args.tag, args.filter, args.include_unfinished)
    ids = [e.experiment_id for e in experiments]
    runs = search_all_runs(client, ids, filter_string, args.filter) if ids else []
    runs = [r for r in runs if r.data.tags.get("rlx.kind") != "sweep"]  # a sweep's parent run holds no results
    if not runs:
        raise UsageError(f"no runs selected ({describe_selection(args)}) in {uri}", 1)

    names = {e.experiment_id: e.name for e in experiments}
    records = [load_record(client, r, names.get(r.info.experiment_id, "?"), group_by)
               for r in runs]

    all_keys = {k for rec in records for k in rec.final}
    columns = table_columns(pass_ks_to_show(pass_ks_logged(all_keys), args.k))
    rows = summarize(records, columns)
    requested = {f"pass_at_k_{k}" for k in (args.k or [])}
    columns = present_columns(rows, columns, keep=requested | {"pass_at_1"})
    headers, body = table_cells(rows, group_by, columns)

    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out_dir = Path(args.out) if args.out else Path("outputs") / "compare" / stamp
    out_dir.mkdir(parents=True, exist_ok=True)

    echo(f"{len(records)} runs in {len(rows)} groups ({describe_selection(args)}) from {uri}")
    echo("values: mean ± standard error over runs; (n=m): only m runs logged it; "
         f"{MISSING}: not logged")
    echo(render_text(headers, body))

    command = "rlx-compare " + " ".join(shlex.quote(a) for a in args.argv)
    preamble = [
        "# rlx-compare results",
        "",
        f"- selection: {describe_selection(args)}; {len(records)} runs in {len(rows)} groups",
        f"- tracking store: `{uri}`",
        f"- generated: {_dt.datetime.now().isoformat(timespec='seconds')} by `{command}`",
        "- each value: mean ± standard error over the group's runs (std with ddof=1 / sqrt(n)); "
        "final = a run's last logged value; clip% low/high = % of tokens clipped on that side "
        "(train/clipfrac_low/high), mean over the run; "
        f"(n=m): only m runs logged it; {MISSING}: not logged",
    ]
    md_path = out_dir / "results.md"
    md_path.write_text(render_markdown(headers, body, preamble))
    write_csv(out_dir / "results.csv", *csv_rows(rows, group_by, columns))
    write_csv(out_dir / "runs.csv", *run_csv_rows(records, group_by, columns))

    groups: dict[str, list[plots.Run]] = {}
    finals: dict[str, list[dict[str, float]]] = {}
    for rec in sorted(records, key=lambda r: natural_key(r.group)):
        groups.setdefault(group_label(rec.group), []).append(rec.history)
        finals.setdefault(group_label(rec.group), []).append(rec.final)
    written = plots.comparison_plots(groups, finals, out_dir, note=echo)

    if not args.no_summary_run:
        tags = {"rlx.selection": describe_selection(args)[:8000], "rlx.command": command[:8000]}
        if args.sweep_id:
            tags["sweep_id"] = args.sweep_id
        params = {"group_by": ",".join(group_by), "n_runs": str(len(records)),
                  "n_groups": str(len(rows)), "filter": filter_string[:6000] or "(none)"}
        parent = find_parent(client, args.sweep_id) if args.sweep_id else None
        if parent is not None:
            log_on_parent(client, parent.info.run_id, out_dir, {**tags, **{f"rlx.compare.{k}": v
                                                                          for k, v in params.items()}})
            echo(f"table and plots logged on the sweep's parent run {parent.info.run_id} "
                 f"('{parent.info.run_name}', artifacts under compare/)")
        else:
            run_id = log_summary_run(client, uri, out_dir, tags, params,
                                     summary_artifact_location(uri, experiments))
            echo(f"summary run {run_id} in experiment '{SUMMARY_EXPERIMENT}'")

    echo(f"table: {md_path}")
    if "entropy" in written:
        echo(f"entropy plot: {written['entropy']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``rlx-compare`` entry point; returns the exit code (see the module docstring)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    try:
        return run_compare(args)
    except UsageError as exc:
        print(f"rlx-compare: {exc}", file=sys.stderr)
        return exc.code


if __name__ == "__main__":
    sys.exit(main())
