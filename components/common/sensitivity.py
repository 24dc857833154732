"""Accuracy control shared by the Quantizer, the Pruner and the Clusterer: the budget, its check
against the task, and the bounded greedy search that spares the most sensitive layers.

A step measures how much each layer costs the task's metric on the eval split when only that layer
is optimised (or, for quantization, recovered when only that layer is kept in float), then leaves
the costliest layers out (or optimises them less) one at a time until the candidate's metric is
within the budget. Every evaluation is recorded: what was spared, the metric, the drop. The search
stops at the budget, at ``max_evaluations`` or when nothing is left to spare; a budget it cannot
meet is a rejection naming the best it reached. The gate still judges the result by its own rules.

The search and the config import no TensorFlow (the steps pass in their own ``evaluate``);
:func:`one_shot_drops` and :func:`controlled_fine_tune`, the Pruner's and the Clusterer's side,
import it where they run models.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pydantic

from components.common.config import StrictModel
from components.common.errors import CandidateError, ConfigError

log = logging.getLogger(__name__)

#: Evaluations an accuracy-controlled step may spend when none is configured.
DEFAULT_MAX_EVALUATIONS = 12
#: Layers whose metric cost is measured one by one (the worst few by a cheap score first).
DEFAULT_PROBE_LAYERS = 4
#: Fine-tuning runs a pruning or clustering step may spend when none is configured.
DEFAULT_FINE_TUNED_EVALUATIONS = 3


class AccuracyBudget(StrictModel):
    """A drop budget for one step, and how many evaluations may be spent meeting it."""

    max_drop_points: float | None = pydantic.Field(
        None,
        ge=0,
        le=100,
        description="Largest drop of the task's metric allowed, in points (top-1 accuracy, "
        "accuracy, label or pixel accuracy, x100), against the step's input. Classification "
        "and dense tasks.",
    )
    max_relative_error_increase: float | None = pydantic.Field(
        None,
        ge=0,
        le=10,
        description="Regression: largest relative increase of the MAE allowed (0.05: 5% "
        "higher than the step's input).",
    )
    max_evaluations: int = pydantic.Field(
        DEFAULT_MAX_EVALUATIONS,
        ge=1,
        le=200,
        description="Most candidate evaluations on the eval split; the search stops there.",
    )

    @pydantic.model_validator(mode="after")
    def _one_budget(self):
        given = [
            n
            for n in ("max_drop_points", "max_relative_error_increase")
            if getattr(self, n) is not None
        ]
        if len(given) != 1:
            raise ValueError(
                "set exactly one of max_drop_points (classification, dense) or "
                f"max_relative_error_increase (regression); got {given or 'neither'}"
            )
        return self


class AccuracyControlConfig(AccuracyBudget):
    """Quantization: keep the costliest layers in float until the metric is within the budget.

    An evaluation converts the flatbuffer with the chosen layers in float (no new calibration) and
    runs it on the eval split: seconds on small models.
    """

    probe_layers: int = pydantic.Field(
        DEFAULT_PROBE_LAYERS,
        ge=0,
        le=50,
        description="Layers whose cost is measured alone first (the worst by the quantization "
        "debugger's error); 0: rank by that error only.",
    )


class FineTunedAccuracyControlConfig(AccuracyBudget):
    """Pruning / clustering: leave the costliest layers out until the fine-tuned metric is within
    the budget. Layers are ranked by what optimising each alone costs before fine-tuning (one
    eval pass per layer); every evaluation is a whole fine-tuning run, so few are allowed."""

    max_evaluations: int = pydantic.Field(
        DEFAULT_FINE_TUNED_EVALUATIONS,
        ge=1,
        le=50,
        description="Most fine-tuning runs (each one evaluated on the eval split); the first "
        "optimises every selected layer, each next one leaves one more layer out.",
    )


def check_fits(control: AccuracyBudget | None, task, where: str) -> None:
    """An accuracy budget the task's metric cannot express fails here (preflight), naming the key.

    Raises:
      ConfigError: ``<where>.accuracy_control.<key>`` and what fits the task.
    """
    if control is None or task is None:
        return
    if task.kind == "regression" and control.max_drop_points is not None:
        raise ConfigError(
            f"{where}.accuracy_control.max_drop_points: task regression has no accuracy points "
            f"(its metric is {task.metric}, lower is better); use "
            "max_relative_error_increase instead."
        )
    if task.kind != "regression" and control.max_relative_error_increase is not None:
        raise ConfigError(
            f"{where}.accuracy_control.max_relative_error_increase: task {task.kind} has no "
            f"error to increase (its metric is {task.metric}, higher is better); use "
            "max_drop_points instead."
        )


def drop(task, before: float | None, after: float | None) -> float | None:
    """How much worse ``after`` is, in the budget's unit: points for accuracies, the relative
    increase for regression's MAE. None when either is unknown."""
    if before is None or after is None:
        return None
    if task.kind == "regression":
        return (after - before) / max(abs(before), 1e-12)
    return (before - after) * 100.0


def budget(control: AccuracyBudget) -> float:
    """The largest :func:`drop` allowed."""
    if control.max_drop_points is not None:
        return float(control.max_drop_points)
    return float(control.max_relative_error_increase)


def unit(task) -> str:
    return "relative MAE increase" if task.kind == "regression" else "points"


class BudgetNotMet(CandidateError):
    """No candidate within the accuracy budget was found within the evaluations allowed."""

    step = "accuracy_control"


@dataclass
class Evaluation:
    """One evaluation of the search: what was spared and what the candidate scored."""

    spared: list[str]
    metric: float | None
    drop: float | None
    purpose: str  # "candidate", "probe <layer>" or "search"
    detail: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "spared": list(self.spared),
            "metric": self.metric,
            "drop": self.drop,
            "purpose": self.purpose,
            **self.detail,
        }


@dataclass
class SearchResult:
    """What a controlled step keeps: the spared layers, the state that scored, the record."""

    spared: list[str]
    state: object
    evaluations: list[Evaluation]
    within_budget: bool
    ranking: list[dict]

    @property
    def best(self) -> Evaluation:
        return _best(self.evaluations)


def _best(evaluations: Sequence[Evaluation]) -> Evaluation:
    scored = [e for e in evaluations if e.drop is not None]
    return min(scored, key=lambda e: (e.drop, len(e.spared))) if scored else evaluations[0]


def search(
    *,
    task,
    before: float,
    control: AccuracyBudget,
    layers: Sequence[str],
    evaluate: Callable[[list[str]], tuple[float | None, object, dict]],
    first: tuple[float | None, object, dict] | None = None,
    scores: dict[str, float] | None = None,
    what: str = "layers",
) -> SearchResult:
    """The bounded greedy search shared by the steps.

    Args:
      task: the model's task (its metric's direction and unit).
      before: the step's input metric on the eval split.
      control: the budget and the number of evaluations allowed.
      layers: the layers that can be spared, in model order.
      evaluate: ``evaluate(spared)`` -> (metric, state, detail): the candidate with ``spared``
        left out (kept in float, or optimised less), its metric on the eval split, a state the
        caller keeps for the chosen one (a flatbuffer, a model), and extra facts to record.
      first: the candidate with nothing spared, when the caller already evaluated it.
      scores: a cheap per-layer score (higher: more sensitive, e.g. the quantization debugger's
        RMSE/scale) used to pick the layers to probe and to rank the rest.
      what: how the spared layers are named in messages ("layers kept in float", ...).

    Returns:
      The chosen :class:`SearchResult` (within budget, or ``within_budget`` False when nothing
      met it: the caller rejects the candidate with :func:`reject`).
    """
    limit = budget(control)
    evaluations: list[Evaluation] = []
    states: dict[tuple[str, ...], object] = {}

    def run(spared: list[str], purpose: str, result=None) -> Evaluation:
        metric, state, detail = result if result is not None else evaluate(list(spared))
        entry = Evaluation(list(spared), metric, drop(task, before, metric), purpose, detail)
        evaluations.append(entry)
        states[tuple(spared)] = state
        return entry

    def within(entry: Evaluation) -> bool:
        return entry.drop is not None and entry.drop <= limit + 1e-9

    def done(spared, ok, ranking):
        chosen = list(spared) if ok else _best(evaluations).spared
        return SearchResult(chosen, states[tuple(chosen)], evaluations, ok, ranking)

    plain = run([], "candidate", first)
    scores = dict(scores or {})
    order = sorted(layers, key=lambda n: -scores.get(n, 0.0)) if scores else list(layers)
    ranking = [{"layer": n, "score": scores.get(n)} for n in order]
    if within(plain) or not layers:
        return done([], within(plain), ranking)

    # Probes: each of the worst few alone; what sparing it alone gains ranks the layers.
    wanted = getattr(control, "probe_layers", 0)
    probes = order[: min(wanted, len(order), control.max_evaluations - 1)]
    gains: dict[str, float] = {}
    for name in probes:
        entry = run([name], f"probe {name}")
        if entry.drop is not None and plain.drop is not None:
            gains[name] = plain.drop - entry.drop
        for rank in ranking:
            if rank["layer"] == name:
                rank["metric_alone"] = entry.metric
                rank["drop_alone"] = entry.drop
                rank["recovered"] = gains.get(name)
        if within(entry):
            return done([name], True, _ranked(ranking, gains))
    ranking = _ranked(ranking, gains)
    # Greedy: spare the layers in the order of what they recovered alone, then by score.
    spared: list[str] = []
    for rank in ranking:
        if len(evaluations) >= control.max_evaluations:
            break
        spared.append(rank["layer"])
        if len(spared) == 1 and tuple(spared) in states:
            continue  # probed already
        entry = run(spared, "search")
        if within(entry):
            return done(spared, True, ranking)
    return done(spared, False, ranking)


def _ranked(ranking: list[dict], gains: dict[str, float]) -> list[dict]:
    """Probed layers first, the most recovered first; the rest in score order after them."""
    probed = sorted((r for r in ranking if r["layer"] in gains), key=lambda r: -gains[r["layer"]])
    return probed + [r for r in ranking if r["layer"] not in gains]


def record(result: SearchResult, task, control: AccuracyBudget, what: str) -> dict:
    """The step record's ``accuracy_control`` entry."""
    best = result.best
    return {
        "budget": budget(control),
        "unit": unit(task),
        "max_evaluations": control.max_evaluations,
        "evaluations_used": len(result.evaluations),
        "within_budget": result.within_budget,
        "spared": list(result.spared),
        "spared_means": what,
        "drop_before": result.evaluations[0].drop,
        "drop_after": next(
            (e.drop for e in result.evaluations if e.spared == result.spared), best.drop
        ),
        "ranking": result.ranking,
        "evaluations": [e.to_dict() for e in result.evaluations],
    }


def reject(result: SearchResult, task, control: AccuracyBudget, what: str) -> BudgetNotMet:
    """The rejection for a budget no evaluation met: the reason and the best reached."""
    best = result.best
    limit = budget(control)
    u = unit(task)
    fmt = (lambda v: f"{v:.2%}") if task.kind == "regression" else (lambda v: f"{v:.2f} {u}")
    return BudgetNotMet(
        f"accuracy_control: no candidate within the budget ({fmt(limit)}) after "
        f"{len(result.evaluations)} of {control.max_evaluations} evaluations; the best lost "
        f"{fmt(best.drop) if best.drop is not None else 'an unknown amount'} with {what} "
        f"{best.spared or 'none'} (the candidate as it is lost "
        f"{fmt(result.evaluations[0].drop) if result.evaluations[0].drop is not None else '?'}). "
        "Raise max_drop_points / max_relative_error_increase or max_evaluations, or use a "
        "gentler setting for this model.",
        detail=f"budget {fmt(limit)} not met; best {fmt(best.drop) if best.drop is not None else '?'}"
        f" with {len(best.spared)} {what}",
    )


# --------------------------------------------------------------------------- accuracy control

#: At most this many layers get a one-shot sensitivity measurement (the largest first).
MAX_ONE_SHOT_LAYERS = 64


def one_shot_drops(model, selected, weights_of, transform, eval_ds, task, before) -> list[dict]:
    """What optimising each layer alone costs, before any fine-tuning: the layer's weights are
    replaced by ``transform(values)`` (pruned at the target, clustered to the target) in a copy
    of ``model``, the task's metric is measured on the eval split, and the weights are put back.

    Returns:
      Per layer, the costliest first: ``layer``, ``weights``, ``metric`` and ``drop`` (points;
      regression: the relative MAE increase; see :func:`drop`).
    """
    import numpy as np

    from components.common import optimization, training

    copy = optimization.clean_copy(model)
    sizes = {
        name: sum(int(np.prod(w.shape)) for w in (weights_of(copy.get_layer(name)) or []))
        for name in selected
    }
    measured = sorted(selected, key=lambda n: -sizes[n])[:MAX_ONE_SHOT_LAYERS]
    result = []
    for name in measured:
        variables = weights_of(copy.get_layer(name)) or []
        saved = [v.numpy() for v in variables]
        for variable, values in zip(variables, saved, strict=True):
            variable.assign(transform(values).astype(values.dtype))
        metric = training.accuracy(copy, eval_ds, task)
        for variable, values in zip(variables, saved, strict=True):
            variable.assign(values)
        result.append(
            {
                "layer": name,
                "weights": sizes[name],
                "metric": metric,
                "drop": drop(task, before, metric),
            }
        )
    return sorted(result, key=lambda e: -(e["drop"] or 0.0))


def controlled_fine_tune(model, selected, tune, eval_ds, task, before, control, one_shot, what):
    """Fine-tunes with the most sensitive layers left out until the metric fits ``control``.

    ``tune(layers)`` fine-tunes ``model`` with ``layers`` optimised and returns the
    :class:`~components.common.optimization.FineTuned`; each call is one of ``control.max_evaluations``. The layers are ranked by
    ``one_shot`` (:func:`one_shot_drops`), and left out one more at a time, the costliest first;
    at least one layer stays optimised. A budget not met keeps the best candidate reached, with
    ``within_budget`` False in the record: the gate judges it by its own rules.

    Returns:
      (the chosen FineTuned, the layers it optimised, its metric, the record's
      ``accuracy_control`` section).
    """
    from components.common import training

    def evaluate(spared):
        layers = [n for n in selected if n not in spared]
        if not layers:
            return None, None, {"optimized_layers": 0, "skipped": "nothing left to optimise"}
        tuned = tune(layers)
        metric = training.accuracy(tuned.model, eval_ds, task)
        return metric, (tuned, layers, metric), {"optimized_layers": len(layers)}

    scores = {e["layer"]: (e["drop"] or 0.0) for e in one_shot}
    ranked = [e["layer"] for e in one_shot]
    ranked += [n for n in selected if n not in ranked]
    result = search(
        task=task,
        before=before,
        control=control,
        layers=ranked[: max(0, len(selected) - 1)],
        evaluate=evaluate,
        scores=scores,
        what=what,
    )
    section = record(result, task, control, what)
    section["one_shot"] = one_shot
    if not result.within_budget:
        log.warning(
            "accuracy control: budget %s %s not met in %d evaluations; keeping the best reached "
            "(%s %s)",
            budget(control),
            unit(task),
            len(result.evaluations),
            what,
            result.spared,
        )
    tuned, layers, metric = result.state
    return tuned, layers, metric, section
