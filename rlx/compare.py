"""rlx-compare: a results table and plots across MLflow runs, grouped by config keys.

Selects runs from any MLflow tracking store (MLflow's own query API), groups them by config
keys (the flattened params, e.g. ``algorithm.name``), and writes one row per group with each
value as mean ± standard error over the group's runs (seeds):

    rlx-compare --sweep-id 2025-11-27_paper
    rlx-compare --experiment arith --group-by algorithm.name,algorithm.regulator.zeta_max
    python -m rlx.compare --filter "params.seed != '0'" --k 4 8 --no-summary-run

Output: a terminal table, ``results.md``, ``results.csv`` (one row per group), ``runs.csv``
(one row per selected run) and PNG plots in ``--out``; unless ``--no-summary-run``, all of it
logged as artifacts of a new run in the MLflow experiment ``rlx-compare``.

Exit codes: 0 done; 1 nothing selected (or no store / unknown experiment); 2 bad arguments
(e.g. an invalid filter string).
"""

from __future__ import annotations

import argparse
import csv
import datetime as _dt
import math
import os
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from rlx import plots

DEFAULT_TRACKING_URI = "sqlite:///outputs/mlflow.db"
DEFAULT_GROUP_BY = "algorithm.name,precision.name"
SUMMARY_EXPERIMENT = "rlx-compare"
MISSING = "-"  # table cell of a group where no run logged the metric

PASS_AT_1 = "eval/pass_at_1"
PASS_AT_K_PREFIX = "eval/pass_at_k/"

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
# Table columns
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Column:
    """One table column: a per-run reduction of one metric, then mean ± s.e. over the group.

    ``reduce``: ``"final"`` = the run's last logged value (highest step, MLflow's latest value);
    ``"mean"`` = the mean of the run's logged values over the run.
    """

    key: str  # CSV name stem, e.g. "pass_at_1"
    header: str  # terminal / Markdown header
    metric: str  # MLflow metric key
    reduce: str  # "final" | "mean"
    fmt: str  # format spec of mean and s.e.
    scale: float = 1.0  # display factor (CSV keeps the metric's own unit)


def table_columns(pass_ks: list[int]) -> list[Column]:
    """The results-table columns, with one pass@k column per k in ``pass_ks``."""
    cols = [Column("pass_at_1", "pass@1", PASS_AT_1, "final", ".3f")]
    cols += [
        Column(f"pass_at_k_{k}", f"pass@{k}", f"{PASS_AT_K_PREFIX}{k}", "final", ".3f")
        for k in pass_ks if k != 1  # pass@1 is its own column
    ]
    cols += [
        Column("distinct_correct", "distinct correct", "eval/distinct_correct", "final", ".2f"),
        # the same on the training prompts (eval_train/), where diversity collapse shows first
        Column("train_pass_at_1", "train pass@1", "eval_train/pass_at_1", "final", ".3f"),
        Column("train_distinct_correct", "train distinct", "eval_train/distinct_correct", "final", ".2f"),
        Column("entropy_change_pct", "entropy chg %", "train/entropy_change_pct", "final", ".1f"),
        Column("entropy_cumulative", "cum. entropy", "train/entropy_cumulative", "final", ".2f"),
        Column("zeta", "zeta", "control/zeta", "final", ".3g"),
        Column("eps_high", "eps_high", "control/eps_high", "final", ".3g"),
        Column("reward_mean", "reward", "train/reward_mean", "final", ".3f"),
        # % of tokens clipped on each side, averaged over the run: shows whether ADAPO binds
        Column("clipfrac_low", "clip% low", "train/clipfrac_low", "mean", ".2f", 100.0),
        Column("clipfrac_high", "clip% high", "train/clipfrac_high", "mean", ".2f", 100.0),
        # precision (Theorem 3), averaged over the run: % of sampled tokens whose clip decision
        # differs from an fp32 recomputation, the % of those flips on the entropy-lowering side, and
        # the first minibatch's ratio mean - 1 (0 when exactly on-policy)
        Column("clip_flip_frac", "clip flip %", "precision/clip_flip_frac", "mean", ".3f", 100.0),
        Column("clip_flip_lowering_frac", "flips lowering %", "precision/clip_flip_lowering_frac", "mean", ".3f",
               100.0),
        Column("ratio_bias", "ratio bias", "precision/ratio_bias", "mean", ".2e"),
        Column("logp_mismatch_mean", "|dlogp| sampler", "precision/logp_mismatch_mean", "mean", ".2e"),
    ]
    return cols


def pass_ks_logged(metric_keys) -> list[int]:
    """Sorted k of the ``eval/pass_at_k/<k>`` metrics among ``metric_keys``."""
    ks = set()
    for key in metric_keys:
        suffix = key[len(PASS_AT_K_PREFIX):] if key.startswith(PASS_AT_K_PREFIX) else ""
        if suffix.isdigit():
            ks.add(int(suffix))
    return sorted(ks)


def pass_ks_to_show(logged: list[int], requested: list[int] | None) -> list[int]:
    """pass@k columns: the requested k (all of them, logged or not), else the largest logged k
    (none if no run logged pass@k; k = 1 is left to the pass@1 column)."""
    if requested:
        return sorted(set(requested))
    above_one = [k for k in logged if k > 1]
    return [max(above_one)] if above_one else []


# ---------------------------------------------------------------------------------------------
# Runs and groups (pure)
# ---------------------------------------------------------------------------------------------
@dataclass
class RunRecord:
    """What the table and plots need of one MLflow run."""

    run_id: str
    experiment: str
    run_name: str
    group: tuple[str, ...]  # values of the --group-by keys
    final: dict[str, float]  # metric -> last logged value (by step)
    history: dict[str, list[tuple[int, float]]] = field(default_factory=dict)


@dataclass
class Cell:
    """Mean ± standard error of one column over the runs of a group that logged its metric."""

    mean: float
    se: float | None  # None when n == 1
    n: int


@dataclass
class GroupRow:
    group: tuple[str, ...]
    n_runs: int
    cells: dict[str, Cell]  # Column.key -> Cell; absent when no run of the group logged it


def group_of(params: dict[str, str], tags: dict[str, str], keys: list[str]) -> tuple[str, ...]:
    """A run's group: the value of each key among its params (else its tags), ``"?"`` if unset."""
    return tuple(params.get(k, tags.get(k, "?")) for k in keys)


def natural_key(group: tuple[str, ...]) -> tuple:
    """Sort key that orders numbers numerically ("2" < "10") and text alphabetically."""
    out = []
    for v in group:
        try:
            out.append((0, float(v), ""))
        except ValueError:
            out.append((1, 0.0, v))
    return tuple(out)


def reduce_run(record: RunRecord, column: Column) -> float | None:
    """A run's value in ``column``: its final value, or the mean over its history."""
    if column.reduce == "final":
        value = record.final.get(column.metric)
    elif column.reduce == "mean":
        values = [v for _, v in record.history.get(column.metric, []) if math.isfinite(v)]
        value = sum(values) / len(values) if values else None
    else:
        raise ValueError(f"unknown reduce {column.reduce!r}")
    return value if value is not None and math.isfinite(value) else None


def summarize(records: list[RunRecord], columns: list[Column]) -> list[GroupRow]:
    """One row per group: the number of runs, and per column mean ± s.e. over its runs."""
    by_group: dict[tuple[str, ...], list[RunRecord]] = {}
    for rec in records:
        by_group.setdefault(rec.group, []).append(rec)
    rows = []
    for group in sorted(by_group, key=natural_key):
        runs = by_group[group]
        cells = {}
        for col in columns:
            values = [v for v in (reduce_run(r, col) for r in runs) if v is not None]
            if values:
                mean, se = plots.mean_se(values)
                cells[col.key] = Cell(mean, se, len(values))
        rows.append(GroupRow(group, len(runs), cells))
    return rows


def present_columns(rows: list[GroupRow], columns: list[Column], keep: set[str]) -> list[Column]:
    """The columns some group has a value for, plus those in ``keep`` (explicitly requested)."""
    return [c for c in columns if c.key in keep or any(c.key in r.cells for r in rows)]


def group_label(group: tuple[str, ...]) -> str:
    """Legend label of a group, e.g. ``"grpo, fp32"``."""
    return ", ".join(group)


# ---------------------------------------------------------------------------------------------
# Rendering (pure)
# ---------------------------------------------------------------------------------------------
def format_cell(cell: Cell | None, fmt: str, n_runs: int, scale: float = 1.0) -> str:
    """``"mean ± se"`` (times ``scale``); no ± part when n = 1; ``"(n=m)"`` appended when only
    m < n_runs of the group's runs logged the metric; ``MISSING`` when none did."""
    if cell is None:
        return MISSING
    text = format(cell.mean * scale, fmt)
    if cell.se is not None:
        text += f" ± {format(cell.se * scale, fmt)}"
    if cell.n < n_runs:
        text += f" (n={cell.n})"
    return text


def table_cells(
    rows: list[GroupRow], group_by: list[str], columns: list[Column]
) -> tuple[list[str], list[list[str]]]:
    """Headers and formatted cells of the results table."""
    headers = list(group_by) + ["runs"] + [c.header for c in columns]
    body = [
        list(r.group) + [str(r.n_runs)]
        + [format_cell(r.cells.get(c.key), c.fmt, r.n_runs, c.scale) for c in columns]
        for r in rows
    ]
    return headers, body


def render_text(headers: list[str], body: list[list[str]]) -> str:
    """A plain aligned text table (text columns left-aligned, values right-aligned)."""
    widths = [max([len(h)] + [len(row[i]) for row in body]) for i, h in enumerate(headers)]

    def line(cells, numeric_from):
        return "  ".join(
            c.rjust(w) if i >= numeric_from else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths))
        ).rstrip()

    numeric_from = headers.index("runs")
    out = [line(headers, numeric_from), "  ".join("-" * w for w in widths)]
    out += [line(row, numeric_from) for row in body]
    return "\n".join(out)


def render_markdown(headers: list[str], body: list[list[str]], preamble: list[str]) -> str:
    """A Markdown document: ``preamble`` lines, then the table (values right-aligned)."""
    numeric_from = headers.index("runs")
    esc = lambda s: s.replace("|", "\\|")  # noqa: E731
    align = ["---" if i < numeric_from else "---:" for i in range(len(headers))]
    lines = list(preamble) + [""]
    lines.append("| " + " | ".join(esc(h) for h in headers) + " |")
    lines.append("| " + " | ".join(align) + " |")
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in body]
    return "\n".join(lines) + "\n"


def csv_rows(
    rows: list[GroupRow], group_by: list[str], columns: list[Column]
) -> tuple[list[str], list[list]]:
    """Machine-readable results: per column ``<key>_mean``, ``<key>_se``, ``<key>_n`` (empty
    when absent; se empty when n = 1)."""
    header = list(group_by) + ["n_runs"]
    for c in columns:
        header += [f"{c.key}_mean", f"{c.key}_se", f"{c.key}_n"]
    out = []
    for r in rows:
        line: list = list(r.group) + [r.n_runs]
        for c in columns:
            cell = r.cells.get(c.key)
            if cell is None:
                line += ["", "", 0]
            else:
                line += [repr(cell.mean), "" if cell.se is None else repr(cell.se), cell.n]
        out.append(line)
    return header, out


def run_csv_rows(
    records: list[RunRecord], group_by: list[str], columns: list[Column]
) -> tuple[list[str], list[list]]:
    """One row per selected run (run id, experiment, name, group keys, each column's value)."""
    header = ["run_id", "experiment", "run_name"] + list(group_by) + [c.key for c in columns]
    out = []
    for rec in sorted(records, key=lambda r: (natural_key(r.group), r.run_name, r.run_id)):
        values = [reduce_run(rec, c) for c in columns]
        out.append([rec.run_id, rec.experiment, rec.run_name, *rec.group,
                    *("" if v is None else repr(v) for v in values)])
    return header, out


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    """Write a CSV file with a header row."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


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


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` tracking URI, else None."""
    m = re.match(r"^sqlite:///(.*)$", uri)
    return Path(m.group(1)) if m else None


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
    final = dict(run.data.metrics)
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


def log_summary_run(client, out_dir: Path, tags: dict[str, str], params: dict[str, str],
                    artifact_location: str | None) -> str:
    """Log everything in ``out_dir`` as artifacts of a new run in experiment ``rlx-compare``
    (created if needed); the run ends FAILED if logging fails. Returns the run id."""
    exp = client.get_experiment_by_name(SUMMARY_EXPERIMENT)
    exp_id = exp.experiment_id if exp else client.create_experiment(
        SUMMARY_EXPERIMENT, artifact_location=artifact_location)
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
        run_id = log_summary_run(client, out_dir, tags, params,
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
