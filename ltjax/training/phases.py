"""A method's phases resolved against a config: lengths, samplers, optimiser and schedule settings.

``plan_phases(config, method, train_labels)`` turns the phases a method declares
(:mod:`ltjax.methods.base`) and their config blocks (``config.method.phases.<name>``) into
:class:`PhasePlan` entries with absolute positions on the run's step counter: phase ``i`` covers steps
``[start, start + length)``; a pass phase has length 1.

Samplers: the first stream of the first phase uses ``config.seed`` itself (so a single-phase run draws
exactly the order it always has); every other (phase, stream) gets its own seed derived from
``(config.seed, phase index, stream index)`` and its own augmentation tag.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import ml_collections
import numpy as np

from ltjax.data.sampling import make_sampler
from ltjax.errors import ConfigError
from ltjax.methods.base import PassPhase, TrainPhase

PHASE_FIELDS = ("epochs", "steps", "optimizer", "schedule", "streams")


@dataclasses.dataclass
class PhasePlan:
    index: int
    spec: Any  # TrainPhase | PassPhase
    start: int
    length: int
    # training phases only
    streams: tuple[str, ...] = ()
    samplers: dict = dataclasses.field(default_factory=dict)
    tags: dict = dataclasses.field(default_factory=dict)
    steps_per_epoch: int = 0
    optimizer: Any = None  # config.optimizer with the phase's overrides
    schedule: Any = None  # config.schedule with the phase's overrides
    # set by the Experiment (they need the parameter shapes)
    schedule_fn: Any = None
    tx: Any = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def kind(self) -> str:
        return self.spec.kind

    @property
    def end(self) -> int:
        return self.start + self.length


def stream_seed(seed: int, phase: int, stream: int) -> int:
    if phase == 0 and stream == 0:
        return int(seed)
    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, 0x5EED, int(phase), int(stream)]).generate_state(1)[0])


def stream_tag(phase: int, stream: int) -> int:
    return int(phase) * 256 + int(stream)


def _overridden(section: ml_collections.ConfigDict, overrides, where: str) -> ml_collections.ConfigDict:
    out = ml_collections.ConfigDict(section.to_dict())
    for key, value in (overrides.items() if overrides else ()):
        if value is None:  # inherit the run's value
            continue
        if key not in out:
            raise ConfigError(
                f"{where}.{key} is not a field of that section; valid fields: {', '.join(sorted(out.keys()))}"
            )
        out[key] = value.to_dict() if isinstance(value, ml_collections.ConfigDict) else value
    return out


def _phase_block(config, name: str):
    phases = config.method.get("phases", None)
    if phases is None or name not in phases:
        return None
    block = phases[name]
    unknown = set(block.keys()) - set(PHASE_FIELDS)
    if unknown:
        raise ConfigError(
            f"method.phases.{name} has unknown fields {sorted(unknown)}; valid fields: {', '.join(PHASE_FIELDS)}"
        )
    return block


def plan_phases(config, method, train_labels) -> list[PhasePlan]:
    specs = method.phase_list(config.method)
    declared = {s.block_name if isinstance(s, TrainPhase) else s.name for s in specs}
    # blocks the method's defaults carry are valid even when this config runs none of their phases (LDRNet
    # with method.rounds=0 has no m_step / e_step)
    default_blocks = set(method.defaults().get("phases", {}) or {})
    extra = set(config.method.get("phases", {}) or {}) - declared - default_blocks
    if extra:
        raise ConfigError(
            f"method.phases has blocks {sorted(extra)} for phases method {method.name!r} does not have; "
            f"its phase blocks: {', '.join(sorted(declared | default_blocks))}"
        )
    batch = int(config.data.batch_size)
    plans, start = [], 0
    for i, spec in enumerate(specs):
        block = _phase_block(config, spec.block_name if isinstance(spec, TrainPhase) else spec.name)
        where = f"method.phases.{spec.block_name if isinstance(spec, TrainPhase) else spec.name}"
        if isinstance(spec, PassPhase):
            plans.append(PhasePlan(i, spec, start, 1))
            start += 1
            continue
        assert isinstance(spec, TrainPhase)
        stream_cfg = block.get("streams", {}) if block is not None else {}
        # streams the method's default block names are valid even when this config leaves them out (COMIC
        # without its balancer trains one stream)
        default_block = (method.defaults().get("phases", {}) or {}).get(spec.block_name, None)
        optional = set((default_block.get("streams", {}) or {}) if default_block is not None else {})
        stream_cfg = {k: v for k, v in (stream_cfg or {}).items() if k in spec.streams or k not in optional}
        unknown = set(stream_cfg or {}) - set(spec.streams)
        if unknown:
            raise ConfigError(f"{where}.streams names {sorted(unknown)}; the phase's streams are {list(spec.streams)}")
        samplers, tags = {}, {}
        for j, s in enumerate(spec.streams):
            name = (stream_cfg or {}).get(s, "") or config.data.sampler
            samplers[s] = make_sampler(config.data, train_labels, stream_seed(config.seed, i, j), name)
            tags[s] = stream_tag(i, j)
        first = samplers[spec.streams[0]]
        spe = int(config.train.steps_per_epoch) or math.ceil(first.epoch_length / batch)
        epochs = float(block.epochs) if block is not None else 0.0
        steps = int(block.steps) if block is not None else 0
        if steps < 0 or epochs < 0:
            raise ConfigError(f"{where}: epochs and steps must be >= 0, got epochs={epochs}, steps={steps}")
        if steps == 0:
            steps = int(round((epochs or float(config.train.num_epochs)) * spe))
        if steps < 1:
            raise ConfigError(f"{where} would run no step (epochs={epochs}, {spe} steps per epoch); lengthen it")
        opt = _overridden(config.optimizer, block.optimizer if block is not None else None, f"{where}.optimizer")
        sched = _overridden(config.schedule, block.schedule if block is not None else None, f"{where}.schedule")
        plans.append(PhasePlan(i, spec, start, steps, tuple(spec.streams), samplers, tags, spe, opt, sched))
        start += steps
    return plans


def describe(plans: list[PhasePlan]) -> list[dict]:
    """The phases as JSON-able rows (names, kinds, steps, epochs, samplers), for the run's log."""
    rows = []
    for p in plans:
        row = {"name": p.name, "kind": p.kind, "start": p.start, "steps": p.length}
        if p.kind == "train":
            row.update(epochs=p.length / p.steps_per_epoch, steps_per_epoch=p.steps_per_epoch,
                       samplers={s: type(p.samplers[s]).__name__ for s in p.streams})
        else:
            row["split"] = p.spec.split if (p.spec.collect is not None or p.spec.reduce is not None) else None
        rows.append(row)
    return rows
