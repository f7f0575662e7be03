"""Stopping a run on SIGTERM (SLURM, Kubernetes) or SIGINT (Ctrl-C) without losing work.

The current RL iteration finishes; at its end (a Lightning epoch end) every rank writes `last.ckpt`
into the run's checkpoint directory, the MLflow run ends KILLED and the process exits 128 + signal
(143 for SIGTERM, 130 for SIGINT). `rlx-train resume=last` continues from that checkpoint, in the
same MLflow run. A second Ctrl-C aborts at once, without a checkpoint of the unfinished iteration.
"""

from __future__ import annotations

import os
import signal
import threading
from contextlib import contextmanager
from pathlib import Path

from lightning.pytorch.callbacks import Checkpoint, ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException

from rlx.requeue import requeue
from rlx.tracking import flush_metrics

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Interrupted(Exception):
    """A run stopped by a signal; `checkpoint` holds its last completed iteration (None: aborted)."""

    def __init__(self, signum: int, checkpoint: Path | None):
        self.signum, self.checkpoint = signum, checkpoint
        where = f"checkpoint {checkpoint}" if checkpoint else "aborted without a checkpoint"
        super().__init__(f"stopped by {signal.Signals(signum).name}; {where}")

    def __reduce__(self):  # picklable (a Hydra joblib job returns its exception to the parent)
        return type(self), (self.signum, self.checkpoint)

    @property
    def exit_code(self) -> int:
        """A shell's status for a process ended by this signal: 128 + signum (SIGTERM 143, SIGINT 130)."""
        return 128 + self.signum


def last_checkpoint_path(trainer) -> Path:
    """Where the run's ModelCheckpoint writes last.ckpt (the file `resume=last` finds)."""
    model_checkpoint = next(c for c in trainer.checkpoint_callbacks if isinstance(c, ModelCheckpoint))
    return Path(model_checkpoint.dirpath) / f"{model_checkpoint.CHECKPOINT_NAME_LAST}{model_checkpoint.FILE_EXTENSION}"


class StopOnSignal(Checkpoint):
    """Lightning callback: on SIGTERM or SIGINT, let the iteration finish, then save last.ckpt and
    raise Interrupted.

    The check runs at each epoch end, after ModelCheckpoint's (Lightning orders Checkpoint callbacks
    last), so the file is the one ModelCheckpoint would write for that iteration: learner, regulator
    and RNG state from RLModule.on_save_checkpoint. Ranks agree on stopping (any rank signalled), so
    all of them save (FSDP gathers shards) and stop together. Lightning's own SIGTERM handler
    (installed by the Trainer just before training: SLURM requeue bypass, forwarding to launched
    ranks) is chained, not replaced.

    requeue_signal (inside a SLURM job, rlx.requeue): the preemption / time-limit warning; after
    the checkpoint the job is requeued (submitit's handler, or scontrol), then Interrupted."""

    def __init__(self, requeue_signal: int | None = None):
        self.signum: int | None = None
        self.saved: Path | None = None
        self.requeue_signal = requeue_signal
        self.signals = SIGNALS + ((requeue_signal,) if requeue_signal is not None else ())
        self._previous: dict = {}

    def on_train_start(self, trainer, pl_module) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # Python only lets the main thread set signal handlers
        self._previous = {signum: signal.getsignal(signum) for signum in self.signals}
        for signum in self.signals:
            signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame) -> None:
        """Record the first signal; chain SIGTERM to the handler it replaced (the requeue signal's
        runs after the checkpoint); a second SIGINT aborts."""
        if signum == signal.SIGINT and self.signum is not None:
            self._restore()
            raise KeyboardInterrupt
        if self.signum is None:
            self.signum = signum
            # os.write: print() could re-enter a stream the interrupted code is writing (the progress bar)
            then = "checkpoint, requeue and stop" if signum == self.requeue_signal else "checkpoint and stop"
            os.write(2, f"\nrlx: {signal.Signals(signum).name}: finishing this iteration, then {then} "
                        f"(Ctrl-C again: stop now, without a checkpoint)\n".encode())
        previous = self._previous.get(signum)
        if signum not in (signal.SIGINT, self.requeue_signal) and callable(previous):
            previous(signum, frame)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.strategy.reduce_boolean_decision(self.signum is not None, all=False):
            return
        self._save(trainer)
        if self.signum is not None and self.signum == self.requeue_signal and trainer.is_global_zero:
            requeue(self.signum, self._previous.get(self.signum))  # submitit's handler exits the process
        raise Interrupted(self.signum or signal.SIGTERM, self.saved)  # a rank that got no signal stops as SIGTERM

    def on_train_end(self, trainer, pl_module) -> None:
        self._restore()

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self._restore()
        # SIGTERM after the check above: Lightning stops once the epoch is complete (its fit loop
        # raises SIGTERMException), a state that resumes as exactly. One process only: on several
        # ranks this one might save alone, a collective the others never join.
        if isinstance(exception, SIGTERMException) and self.saved is None and trainer.world_size == 1:
            self._save(trainer)

    def _save(self, trainer) -> None:
        self.saved = last_checkpoint_path(trainer)
        trainer.save_checkpoint(self.saved)

    def _restore(self) -> None:
        """Put back the handlers this callback replaced (unless something else replaced it since)."""
        for signum, handler in self._previous.items():
            if signal.getsignal(signum) == self._on_signal:
                signal.signal(signum, handler)
        self._previous = {}


def mark_killed(logger) -> None:
    """Every queued metric written, then the MLflow run ended KILLED (Lightning's own finalize on an
    exception leaves it FAILED)."""
    if logger is not None:
        flush_metrics(logger)
        logger.finalize("KILLED")


def fit_or_stop(trainer, logger, *args, **kwargs) -> None:
    """trainer.fit(*args, **kwargs); when a signal stopped it, the run is marked KILLED and
    Interrupted is raised (after a second Ctrl-C too, then without a checkpoint)."""
    stopper = next(c for c in trainer.callbacks if isinstance(c, StopOnSignal))
    try:
        trainer.fit(*args, **kwargs)
    except BaseException as exc:  # Lightning's KeyboardInterrupt handling ends in SystemExit
        signum = stopper.signum or (signal.SIGTERM if isinstance(exc, SIGTERMException) else None)
        if signum is None:
            raise
        mark_killed(logger)
        if isinstance(exc, Interrupted):
            raise
        raise Interrupted(signum, stopper.saved) from exc


def failure_reason(exc: BaseException, limit: int = 500) -> str:
    """One line: the exception's type and the first line of its message."""
    message = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {message[0] if message else ''}"[:limit]


@contextmanager
def failed_on_error(logger):
    """An exception inside ends the MLflow run FAILED with tag `failure_reason` (a signal's
    Interrupted has already ended it KILLED), then propagates; never a run left RUNNING."""
    try:
        yield
    except Interrupted:
        raise
    except BaseException as exc:
        if logger is not None:
            client, run_id = logger.experiment, logger.run_id
            client.set_tag(run_id, "failure_reason", failure_reason(exc))
            flush_metrics(logger)
            if client.get_run(run_id).info.status == "RUNNING":
                client.set_terminated(run_id, status="FAILED")
        raise
