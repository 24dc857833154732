"""Terminal progress of a local run: which step is running, and how long each one took.

TFX's ``LocalDagRunner`` logs ``Component <id> is running.`` and ``Component <id> is finished.``
(absl, INFO) around every node, and its launcher logs ``A cached execution <n> is used.`` when a
step is reused. :func:`report_progress` listens to those lines and prints::

    [3/13] Pruner ...
    [3/13] Pruner done in 38.2 s
    [4/13] Clusterer cached (0.4 s)

and, every ``heartbeat_s`` while one step runs, ``       Pruner still running (1 min 00 s)``,
so a long fine-tuning, calibration or evaluation never looks hung. The rest of the absl output
keeps the verbosity it had (``tfxopt -v`` still shows everything).
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
import threading
import time
from dataclasses import dataclass, field

ABSL_LOGGER = "absl"
_RUNNING = re.compile(r"^Component (?P<node>\S+) is running\.$")
_FINISHED = re.compile(r"^Component (?P<node>\S+) is finished\.$")
_CACHED = re.compile(r"^A cached execution \d+ is used\.$")


def format_duration(seconds: float) -> str:
    """``38.2 s`` below a minute, ``4 min 05 s`` above."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)} min {rest:02.0f} s"


@dataclass
class StepTiming:
    """One step as the progress printer saw it."""

    node_id: str
    index: int
    started: float
    seconds: float | None = None
    state: str = "running"  # running, done, cached, failed
    last_beat: float = 0.0


@dataclass
class _State:
    total: int | None
    steps: list[StepTiming] = field(default_factory=list)
    current: StepTiming | None = None
    cached: bool = False


class StepProgressHandler(logging.Handler):
    """A logging handler that turns the runner's component lines into progress lines.

    Args:
      total: how many steps the pipeline has (``len(pipeline.components)``); None: unknown.
      stream: where progress goes (default: ``sys.stdout`` at the time of each line).
      forward_level: records of the absl logger at or above this level are passed on to the
        handlers they would have reached without this one (so the usual warnings still show).
    """

    def __init__(self, total: int | None = None, stream=None, forward_level: int = logging.WARNING):
        super().__init__(level=logging.DEBUG)
        self.state = _State(total)
        self._stream = stream
        self.forward_level = forward_level
        self._lock_lines = threading.Lock()

    # ------------------------------------------------------------------ output
    def _print(self, text: str) -> None:
        stream = self._stream or sys.stdout
        with self._lock_lines:
            stream.write(text + "\n")
            stream.flush()

    def _tag(self, step: StepTiming) -> str:
        total = self.state.total
        return f"[{step.index}/{total}]" if total else f"[{step.index}]"

    # ------------------------------------------------------------------ events
    def step_started(self, node_id: str) -> None:
        step = StepTiming(node_id, len(self.state.steps) + 1, time.monotonic())
        self.state.steps.append(step)
        self.state.current, self.state.cached = step, False
        self._print(f"{self._tag(step)} {node_id} ...")

    def step_finished(self, node_id: str) -> None:
        step = self.state.current
        if step is None or step.node_id != node_id:
            return
        step.seconds = time.monotonic() - step.started
        if self.state.cached:
            step.state = "cached"
            self._print(f"{self._tag(step)} {node_id} cached ({format_duration(step.seconds)})")
        else:
            step.state = "done"
            self._print(f"{self._tag(step)} {node_id} done in {format_duration(step.seconds)}")
        self.state.current = None

    def step_failed(self) -> None:
        step = self.state.current
        if step is None:
            return
        step.seconds = time.monotonic() - step.started
        step.state = "failed"
        self._print(
            f"{self._tag(step)} {step.node_id} FAILED after {format_duration(step.seconds)}"
        )
        self.state.current = None

    def heartbeat(self, interval_s: float) -> None:
        """Prints ``still running`` when the current step has run ``interval_s`` since it started
        or since its last such line."""
        step = self.state.current
        now = time.monotonic()
        if step is not None and now - max(step.started, step.last_beat) >= interval_s:
            step.last_beat = now
            elapsed = format_duration(now - step.started)
            self._print(f"{' ' * len(self._tag(step))} {step.node_id} still running ({elapsed})")

    # ------------------------------------------------------------------ logging.Handler
    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if match := _RUNNING.match(message):
                self.step_started(match["node"])
            elif match := _FINISHED.match(message):
                self.step_finished(match["node"])
            elif _CACHED.match(message):
                self.state.cached = True
        except Exception:  # noqa: BLE001 - progress must never break the run
            self.handleError(record)
        if record.levelno >= self.forward_level:
            _forward(record, logging.getLogger(ABSL_LOGGER))


def _forward(record: logging.LogRecord, logger: logging.Logger) -> None:
    """Hands a record to the handlers above ``logger``, as propagation would have."""
    parent = logger.parent
    while parent is not None:
        for handler in parent.handlers:
            if record.levelno >= handler.level:
                handler.handle(record)
        if not parent.propagate:
            break
        parent = parent.parent


@contextlib.contextmanager
def report_progress(total: int | None = None, stream=None, heartbeat_s: float | None = 30.0):
    """Prints one line when each step starts and one when it ends, with its duration.

    Wrap ``LocalDagRunner().run(pipeline)`` in it. Yields the handler; its ``state.steps`` holds
    every :class:`StepTiming` afterwards.

    Args:
      total: the number of steps (``len(pipeline.components)``), for ``[i/total]``.
      stream: where to print (default: standard output).
      heartbeat_s: print ``still running`` this often during a step (None: never).
    """
    from absl import logging as absl_logging  # absl's own logger class, first

    logger = logging.getLogger(ABSL_LOGGER)
    previous_level, previous_propagate = logger.level, logger.propagate
    previous_verbosity = absl_logging.get_verbosity()
    # Records below the level the user asked for (e.g. WARNING without -v) were not shown
    # before; they reach the handler now (it needs the INFO lines) but are not forwarded.
    handler = StepProgressHandler(total, stream, forward_level=logger.getEffectiveLevel())
    logger.addHandler(handler)
    # Through absl's verbosity flag, not logger.setLevel: TensorFlow saves, silences and restores
    # that flag around every SavedModel save, which would otherwise put the logger back to
    # WARNING in the middle of the run and stop the progress lines.
    absl_logging.set_verbosity(max(previous_verbosity, absl_logging.INFO))
    logger.propagate = False
    stop = threading.Event()
    ticker = None
    if heartbeat_s:
        tick = min(1.0, heartbeat_s / 4)  # checks often, prints once per heartbeat_s per step

        def beat():
            while not stop.wait(tick):
                handler.heartbeat(heartbeat_s)

        ticker = threading.Thread(target=beat, name="tfxopt-progress", daemon=True)
        ticker.start()
    started = time.monotonic()
    try:
        yield handler
    except BaseException:
        handler.step_failed()
        raise
    finally:
        stop.set()
        if ticker is not None:
            ticker.join(timeout=1.0)
        logger.removeHandler(handler)
        absl_logging.set_verbosity(previous_verbosity)
        logger.setLevel(previous_level)
        logger.propagate = previous_propagate
    steps = handler.state.steps
    if steps:
        cached = sum(1 for s in steps if s.state == "cached")
        handler._print(
            f"{len(steps)} steps ({cached} cached) in {format_duration(time.monotonic() - started)}"
        )
