"""SLURM preemption and time-outs: checkpoint, requeue, resume, with nobody typing `resume=last`.

SLURM warns a job before it preempts it or its time runs out with a signal (submitit, behind
`hydra/launcher=slurm`, asks for SIGUSR2 `signal_delay_s` seconds ahead; SUBMITIT_PREEMPT_SIGNAL
changes it). On that signal the running iteration finishes and `last.ckpt` of it is written
(rlx.interrupt.StopOnSignal); then the job is requeued: by submitit's own handler when submitit
runs the job (it requeues the same Hydra job), else by `scontrol requeue <job>`. The MLflow run
ends KILLED. When the requeued job starts again with the same config, run_rl finds the
checkpoint its earlier start left (the run directory marked with this SLURM job's id) and
resumes it, in the same MLflow run.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

MARKER = "slurm_job"  # in a run's checkpoint directory: the SLURM job that runs it


def slurm_job_key() -> str | None:
    """This SLURM job's id as `scontrol requeue` takes it (array task: <array job>_<task>);
    None outside SLURM or in an interactive allocation."""
    if os.environ.get("SLURM_JOB_NAME") in ("bash", "interactive"):
        return None
    array_job, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array_job and task:
        return f"{array_job}_{task}"
    return os.environ.get("SLURM_JOB_ID")


def requeue_signal() -> signal.Signals | None:
    """The signal that announces preemption or the time limit: submitit's (SIGUSR2 unless
    SUBMITIT_PREEMPT_SIGNAL says otherwise) inside a SLURM job, else None."""
    if slurm_job_key() is None:
        return None
    return signal.Signals[f"SIG{os.environ.get('SUBMITIT_PREEMPT_SIGNAL', 'USR2').upper().removeprefix('SIG')}"]


def mark_job(run_dir: Path) -> None:
    """Record in the run's checkpoint directory that this SLURM job runs it."""
    key = slurm_job_key()
    if key is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / MARKER).write_text(key)


def requeued_checkpoint(checkpoint_dir: str | Path) -> Path | None:
    """last.ckpt of the run this SLURM job started before it was requeued (None: a first start,
    or not in SLURM)."""
    key = slurm_job_key()
    if key is None:
        return None
    for marker in sorted(Path(checkpoint_dir).glob(f"*/{MARKER}")):
        last = marker.parent / "last.ckpt"
        if marker.read_text().strip() == key and last.exists():
            return last
    return None


def requeue(signum: int, previous_handler) -> None:
    """Requeue this job: submitit's handler when it was installed (it requeues the job and exits
    the process), else `scontrol requeue <job>`."""
    if callable(previous_handler):
        previous_handler(signum, None)
        return
    subprocess.run(["scontrol", "requeue", str(slurm_job_key())], check=True)
