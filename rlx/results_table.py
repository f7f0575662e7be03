"""The results table of rlx-compare, pure: columns, runs grouped by config keys, mean ± standard
error per group, and rendering as text, Markdown and CSV (no MLflow here; rlx.compare selects)."""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from rlx.metrics import pass_at_k_name
from rlx.plots import mean_se

MISSING = "-"  # table cell of a group where no run logged the metric
PASS_AT_1 = "eval/pass_at_1"
PASS_AT_K_PREFIX = "eval/pass_at_k/"


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
        Column(f"pass_at_k_{k}", f"pass@{k}", "eval/" + pass_at_k_name(k), "final", ".3f")
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


def canonical_metric(key: str) -> str:
    """A metric key under today's name: pass@k logged before k was zero-padded (``eval/pass_at_k/8``,
    older stores) reads as ``eval/pass_at_k/08``; every other key is itself."""
    m = re.fullmatch(r"(\w+/pass_at_k/)(\d+)", key)
    return m.group(1) + pass_at_k_name(int(m.group(2))).rsplit("/", 1)[1] if m else key


def pass_ks_logged(metric_keys) -> list[int]:
    """Sorted k of the ``eval/pass_at_k/<kk>`` metrics among ``metric_keys`` (``04`` -> 4)."""
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
                mean, se = mean_se(values)
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


