"""The training loop: data, model, AdamW, LR schedule, EMA, clipping, validation, logs, checkpoints, resume.

:func:`train` runs one validated config (:func:`molsym.train.config.validate_config`)
in this process, as one of ``torchrun``'s ranks or alone. Rank 0 writes
``{output}/log.csv``, TensorBoard events, ``best.pt`` (lowest validation
loss, or the last epoch without validation data) and ``last.pt`` (every
``save_every`` epochs and when the time budget stops the run).

With ``guard`` on (the default), every step's loss is judged before the
optimiser takes it (:mod:`molsym.train.guard`): spikes and non-finite steps
are rolled back and lower the LR; non-finite losses that persist stop the
run with :class:`~molsym.train.guard.TrainingDiverged` (the CLI exits
non-zero), leaving ``last.pt`` as the last epoch wrote it and ``best.pt``
holding good weights. A cosine schedule with ``max_time`` is fitted to the
budget after every epoch (:meth:`LearningRate.fit_to_budget`). With
``stage_two``, the loss is reweighted for the end of the run
(:mod:`molsym.train.stages`).
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from molsym.data import keys as K
from molsym.checkpoint import read_payload
from molsym.data.graph import collate, to_device
from molsym.models.dtypes import resolve_dtype
from molsym.models.potential import Potential
from molsym.train import recipe
from molsym.train import state as run_files
from molsym.train.data import build_splits, has_target, model_config_from_data
from molsym.train.distributed import (World, all_reduce_sum, barrier, broadcast_flag, broadcast_number, init_world,
                                      resolve_device, shutdown)
from molsym.train.ema import WeightAverage
from molsym.train.guard import GOOD, LossGuard, TrainingDiverged, frame_origin
from molsym.train.evaluate import evaluate, loader
from molsym.train.log import TensorBoard, write_csv, write_json
from molsym.train.losses import TERMS, eigen_pairs, error_sums, predict_batch, uses_head, weighted_loss
from molsym.train.metrics import MetricSums, format_table
from molsym.train.sampler import GlobalBatchSampler
from molsym.train.schedule import LearningRate
from molsym.train.stages import TwoStages

clock = time.monotonic  # seconds; the time budget's clock (tests replace it)


class RunExists(RuntimeError):
    """The output directory already holds a run and ``--resume`` was not given."""


def _progress(enabled: bool, description: str):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return lambda iterable: tqdm(iterable, desc=description, leave=False, mininterval=1.0, dynamic_ncols=True)


class Run:
    """Everything one training run holds; built by :func:`train`."""

    def __init__(self, config: dict, world: World, resume: bool):
        self.config, self.world = config, world
        self.output = Path(config["output"])
        self.device = resolve_device(config["device"], world)
        self.dtype = resolve_dtype(config["dtype"])
        last = self.output / run_files.LAST
        previous = None
        if resume:
            if not last.exists():
                raise FileNotFoundError(f"--resume: {last} does not exist, so there is no run to resume")
            previous = run_files.read_training_state(last)
        elif last.exists():
            raise RunExists(f"{self.output} already holds a run ({last}); resume it with --resume "
                            f"or choose another output directory")
        torch.manual_seed(config["seed"])
        model_config = dict(config["model"])
        cutoff = float(previous["config"]["cutoff"] if previous else model_config.get("cutoff", 4.5))
        self.splits = build_splits(config, cutoff, self.dtype)
        config = self.config = recipe.resolve_data_dependent(config, len(self.splits.train), world.size)
        if previous is not None:
            changes = run_files.config_changes(previous["training"]["config"], config)
            if changes:
                raise ValueError(f"--resume: the config differs from the run's in {changes}; "
                                 f"only {sorted(run_files.RESUMABLE_CHANGES)} may change")
        if previous is None:
            model_config = model_config_from_data(config, self.splits)
        else:
            model_config = previous["config"]
        self.model = Potential.from_config(model_config).to(device=self.device, dtype=self.dtype)
        self.trained = self.model
        if world.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            # a head without a loss term gets no gradient: DDP must not wait for it
            untrained_heads = bool(self.model.head_names) and not uses_head(config["loss"])
            self.trained = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids,
                                                                     find_unused_parameters=untrained_heads)
        opt = config["optimizer"]
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=opt["lr"], betas=tuple(opt["betas"]),
                                           eps=opt["eps"], weight_decay=opt["weight_decay"], amsgrad=opt["amsgrad"])
        data = config["data"]
        self.sampler = GlobalBatchSampler(len(self.splits.train), data["batch_size"], world.rank, world.size,
                                          config["seed"])
        self.train_loader = DataLoader(self.splits.train, batch_sampler=self.sampler, collate_fn=collate,
                                       num_workers=data["num_workers"])
        steps = self.sampler.steps_per_epoch()
        if steps == 0:
            raise ValueError(f"the training set ({len(self.splits.train)} structures) gives no batch of at least "
                             f"{world.size} structures")
        self.schedule = LearningRate(self.optimizer, config["schedule"], opt["lr"], steps, config["epochs"])
        self.ema = WeightAverage(self.model, config["ema"]["decay"]) if config["ema"] else None
        self.guard = LossGuard(config["guard"]) if config["guard"] else None
        self.stages = TwoStages(config["loss"], config["stage_two"])
        self.targets = {
            "forces": self.stages.needs("forces") or has_target(self.splits.train, K.FORCES),
            "stress": self.stages.needs("stress"),
        }
        self.epoch, self.step_in_epoch, self.elapsed = 0, 0, 0.0
        self.epoch_start_elapsed = 0.0  # training seconds spent before the current epoch
        self.best_loss, self.history = math.inf, []
        self.train_sums = MetricSums(self.device)
        self.train_loss_sum = 0.0
        if previous is not None:
            self._restore(previous)
        self.tensorboard = TensorBoard(self.output / "tensorboard", config["tensorboard"]) if world.is_main else None

    # -- state ---------------------------------------------------------------------------------------------
    def _restore(self, payload: dict) -> None:
        training = payload["training"]
        self.model.load_state_dict(training["model"])
        self.optimizer.load_state_dict(training["optimizer"])
        self.schedule.load_state_dict(training["schedule"])
        if self.ema is not None:
            self.ema.load_state_dict(training["ema"])
        if self.guard is not None and training.get("guard") is not None:
            self.guard.load_state_dict(training["guard"])
        self.stages.load_state_dict(training.get("stages"))
        position = training["position"]
        self.epoch, self.step_in_epoch = int(position["epoch"]), int(position["step_in_epoch"])
        self.elapsed = float(position["elapsed"])
        self.epoch_start_elapsed = float(position["epoch_start_elapsed"])
        self.best_loss = float(training["best_loss"])
        self.history = list(training["history"])
        self.train_sums.load_state_dict(training["train_sums"])
        self.train_loss_sum = float(training["train_loss_sum"])
        run_files.restore_random_states(training["random"])

    def _weights(self) -> dict:
        return self.ema.shadow if self.ema is not None else self.model.state_dict()

    def _metadata(self) -> dict:
        return {"epoch": self.epoch, "history": self.history, "best_valid_loss": self.best_loss,
                "training_config": self.config}

    def save_best(self) -> None:
        run_files.save_best(self.model, self._weights(), self.output / run_files.BEST, self._metadata())

    def save_last(self) -> None:
        if not self.world.is_main:
            return
        training = {
            "config": self.config,
            "model": {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "guard": self.guard.state_dict() if self.guard is not None else None,
            "stages": self.stages.state_dict(),
            "random": run_files.random_states(),
            "position": {"epoch": self.epoch, "step_in_epoch": self.step_in_epoch, "elapsed": self.elapsed,
                         "epoch_start_elapsed": self.epoch_start_elapsed},
            "best_loss": self.best_loss,
            "history": self.history,
            "train_sums": self.train_sums.state_dict(),
            "train_loss_sum": self.train_loss_sum,
        }
        run_files.save_last(self.model, self._weights(), self.output / run_files.LAST, self._metadata(), training)

    # -- one epoch ----------------------------------------------------------------------------------------
    def train_steps(self, started: float) -> bool:
        """Train the rest of the current epoch; False when the time budget stopped it early."""
        config, world = self.config, self.world
        self.sampler.set_epoch(self.epoch, self.step_in_epoch)
        self.trained.train()
        clip = config["clip_grad_norm"]
        budget = config["max_time"]
        rows = config["loss"]["hessian_rows"] if config["loss"]["hessian"] > 0 else 0
        progress = _progress(config["progress"] and world.is_main, f"epoch {self.epoch + 1}")
        batches = progress(self.train_loader) if progress else self.train_loader
        for batch in batches:
            batch = to_device(batch, self.device, self.dtype)
            generator = torch.Generator().manual_seed(
                (config["seed"] * 1_000_003 + self.epoch) * 100_003 + self.step_in_epoch * 101 + world.rank)
            out = predict_batch(self.trained, batch, forces=self.targets["forces"],
                                stress=self.targets["stress"], hessian_rows=rows,
                                hessian_head=uses_head(config["loss"]), create_graph=True,
                                generator=generator)
            sums = error_sums(out, batch, mask_fixed=config["data"]["fixed_atoms"],
                              eigen_pairs=eigen_pairs(config["loss"]))
            counts = torch.tensor([float(sums[name][0]) if name in sums else 0.0 for name in TERMS],
                                  dtype=torch.float64, device=self.device)
            counts = all_reduce_sum(counts, world)
            loss = weighted_loss(sums, self.stages.weights, dict(zip(TERMS, counts.tolist())), world.size)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            norm = None
            if clip is not None or self.guard is not None:
                norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), math.inf if clip is None else clip)
            step_loss = float(all_reduce_sum(loss.detach().double().reshape(1), world)[0]) / world.size
            if self.guard is None or self._judge(step_loss, float(norm)):
                self.optimizer.step()
                if self.ema is not None:
                    self.ema.update(self.model)
                self.train_sums.add(sums)
                self.train_loss_sum += step_loss / world.size  # summed over the ranks at the epoch's end
            self.schedule.step()
            self.step_in_epoch += 1
            if budget is not None:
                over = self.elapsed + (clock() - started) >= budget
                if broadcast_flag(over, world, self.device) and self.step_in_epoch < self.sampler.steps_per_epoch():
                    return False
        return True

    def _judge(self, loss: float, grad_norm: float) -> bool:
        """Whether to take this step; on a spike or non-finite step, roll back (and, once per episode of
        events, lower the LR)."""
        guard = self.guard
        verdict = guard.judge(loss, grad_norm)
        if verdict == GOOD:
            guard.accept(self.model, self.optimizer, self.ema)
            return True
        self.optimizer.zero_grad(set_to_none=True)
        restored = guard.roll_back(self.model, self.optimizer, self.ema)
        self.schedule.guard_scale = guard.lr_scale
        if guard.stopped():
            raise TrainingDiverged(self._divergence_message(loss, grad_norm))
        if self.world.is_main:
            lr = f"lr x {guard.lr_factor:g}" if guard.cut else "lr kept (same episode)"
            print(f"divergence guard: {verdict} at epoch {self.epoch + 1}, step {self.step_in_epoch + 1} "
                  f"(loss {loss:.4g}, running level {guard.level():.4g}, gradient norm {grad_norm:.4g}); "
                  f"{restored}, {lr}", flush=True)
        return False

    def _divergence_message(self, loss: float, grad_norm: float) -> str:
        paths = self.config["data"]["train"]
        positions = self.sampler.global_batches()[self.step_in_epoch]
        frames = []
        for position in positions:
            part, index = frame_origin(self.splits.train, position)
            frames.append(f"{paths[part] if part < len(paths) else f'part {part}'} frame {index}")
        return (f"training diverged: {self.guard.nonfinite_in_a_row} non-finite steps in a row (guard.max_nonfinite "
                f"{self.guard.max_nonfinite}), the last at epoch {self.epoch + 1}, step {self.step_in_epoch + 1} of "
                f"{self.sampler.steps_per_epoch()} (loss {loss:.4g}, gradient norm {grad_norm:.4g}); its batch "
                f"holds {'; '.join(frames)}. The weights were rolled back to good ones; "
                f"{run_files.LAST} is as epoch {self.epoch} left it and {run_files.BEST} holds good weights. "
                f"Check those frames' labels, or lower optimizer.lr")

    def end_epoch(self) -> dict:
        """Validate, log, keep the best weights and reset the epoch's sums; returns the log row."""
        config, world = self.config, self.world
        events = self.guard.epoch_row() if self.guard is not None else {}
        steps = max(1, self.step_in_epoch - sum(events.values()))  # the steps taken
        row = {"epoch": self.epoch + 1, "lr": self.optimizer.param_groups[0]["lr"],
               "train_loss": self.train_loss_sum / steps}
        row["train_loss"] = float(all_reduce_sum(torch.tensor([row["train_loss"]], dtype=torch.float64,
                                                              device=self.device), world)[0])
        row.update({f"train_{k}": v for k, v in self.train_sums.reduced(world).metrics().items()})
        last_epoch = self.epoch + 1 == config["epochs"]
        valid_loss = math.nan
        if self.splits.valid is not None and ((self.epoch + 1) % config["eval_every"] == 0 or last_epoch):
            sums = self.evaluate(self.splits.valid)
            valid_loss = sums.loss(self.stages.weights)
            row["valid_loss"] = valid_loss
            row.update({f"valid_{k}": v for k, v in sums.metrics().items()})
            self.schedule.report(valid_loss)
        row.update(events)
        # the schedule's fit and the stage switch must agree on every rank: rank 0's clock decides
        self.elapsed = broadcast_number(self.elapsed, world, self.device)
        if self.stages.enabled:
            row["stage"] = self.stages.stage
        self.schedule.fit_to_budget(self.schedule.step_count, self.elapsed, config["max_time"])
        seconds = self.elapsed - self.epoch_start_elapsed
        structures = sum(len(batch) for batch in self.sampler.global_batches())
        row["structures_per_s"] = structures / seconds if seconds > 0 else math.nan
        row["time_s"] = self.elapsed
        self.epoch_start_elapsed = self.elapsed
        self.history.append(row)
        improved = valid_loss < self.best_loss or (self.splits.valid is None)
        if math.isfinite(valid_loss) and valid_loss < self.best_loss:
            self.best_loss = valid_loss
        self.epoch += 1
        self.step_in_epoch = 0
        self.train_sums = MetricSums(self.device)
        self.train_loss_sum = 0.0
        if world.is_main:
            if improved:
                self.save_best()
            write_csv(self.history, self.output / "log.csv")
            self.tensorboard.add(row, self.epoch)
            print(_summary(row), flush=True)
        if self.stages.due(self.schedule.step_count, self.schedule.total_steps, self.elapsed, config["max_time"]):
            self._begin_stage_two()
        return row

    def _begin_stage_two(self) -> None:
        """Reweight the loss from the next epoch on; the best checkpoint is chosen afresh by the new loss."""
        self.stages.stage = 2
        self.best_loss = math.inf
        self.schedule.restart_plateau()
        if self.guard is not None:
            self.guard.restart_level()
        if self.world.is_main:
            weights = ", ".join(f"{name} {self.stages.weights[name]:g}" for name in ("energy", "forces", "stress")
                                if self.stages.needs(name))
            print(f"stage two from epoch {self.epoch + 1}: loss weights {weights}; best.pt is chosen afresh "
                  f"by stage two's validation loss", flush=True)

    def stop_diverged(self) -> None:
        """After :class:`TrainingDiverged`: keep ``last.pt`` as it is, write ``best.pt`` if none exists yet
        (the rolled-back, good weights) and the log so far."""
        if not self.world.is_main:
            return
        if not (self.output / run_files.BEST).exists():
            self.save_best()
        if self.history:
            write_csv(self.history, self.output / "log.csv")
        if self.tensorboard is not None:
            self.tensorboard.close()

    def evaluate(self, dataset, weights: dict | None = None):
        """Metric sums on ``dataset`` of ``weights`` (default: the averaged weights, or the raw ones without EMA)."""
        data = self.config["data"]
        rows = self.config["loss"]["hessian_rows"] if self.config["loss"]["hessian"] > 0 else 0
        batches = loader(dataset, data["valid_batch_size"], self.world, data["num_workers"])
        raw = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self.model.load_state_dict(self._weights() if weights is None else weights)
        try:
            sums, _ = evaluate(self.model, batches, device=self.device, dtype=self.dtype, world=self.world,
                               targets=self.targets, hessian_rows=rows, mask_fixed=data["fixed_atoms"],
                               hessian_head=uses_head(self.config["loss"]),
                               eigen_pairs=eigen_pairs(self.config["loss"]))
        finally:
            self.model.load_state_dict(raw)
        return sums


def _summary(row: dict) -> str:
    parts = [f"epoch {row['epoch']}", f"lr {row['lr']:.3g}", f"loss {row['train_loss']:.4g}"]
    if "valid_loss" in row:
        parts.append(f"valid loss {row['valid_loss']:.4g}")
    for key, label in (("valid_energy_rmse_mev_atom", "E RMSE {:.2f} meV/atom"),
                       ("valid_forces_rmse_mev_a", "F RMSE {:.1f} meV/Å")):
        if key in row:
            parts.append(label.format(row[key]))
    parts.append(f"{row['time_s']:.0f} s")
    return " | ".join(parts)


def train(config: dict, resume: bool = False) -> dict:
    """Run (or resume) training for a validated config; returns the final metrics per split."""
    world = init_world(config["device"] if config["device"] != "auto" else
                       ("cuda" if torch.cuda.is_available() else "cpu"))
    try:
        return _train(config, world, resume)
    finally:
        shutdown(world)


def _train(config: dict, world: World, resume: bool) -> dict:
    run = Run(config, world, resume)
    config = run.config  # with the data-dependent choices made
    if world.is_main:
        run.output.mkdir(parents=True, exist_ok=True)
        print(f"molsym train: {len(run.splits.train)} training structures, "
              f"{len(run.splits.valid) if run.splits.valid is not None else 0} validation, "
              f"{sum(p.numel() for p in run.model.parameters())} parameters, {world.size} process(es), "
              f"device {run.device}, {config['dtype']}; output {run.output}", flush=True)
    stopped_early = False
    while run.epoch < config["epochs"]:
        started = clock()
        try:
            finished = run.train_steps(started)
        except TrainingDiverged:
            run.stop_diverged()
            raise
        run.elapsed += clock() - started
        if finished:
            run.end_epoch()
        out_of_time = config["max_time"] is not None and run.elapsed >= config["max_time"]
        out_of_time = broadcast_flag(out_of_time, world, run.device)
        if not finished or out_of_time or run.epoch % config["save_every"] == 0 or run.epoch == config["epochs"]:
            run.save_last()
        if out_of_time:
            stopped_early = run.epoch < config["epochs"]
            if world.is_main and not (run.output / run_files.BEST).exists():  # stopped inside the first epoch
                run.save_best()
            if world.is_main:
                print(f"time budget of {config['max_time']:.0f} s spent after {run.elapsed:.0f} s "
                      f"(epoch {run.epoch}, step {run.step_in_epoch}); resume with --resume", flush=True)
            break
    barrier(world)
    results = final_metrics(run)
    if world.is_main:
        if run.guard is not None:
            print(run.guard.summary(), flush=True)
        run.tensorboard.close()
        write_json(results, run.output / "results.json")
        print(format_table(results), flush=True)
        if stopped_early:
            print("(stopped by the time budget)", flush=True)
    return results


def final_metrics(run: Run) -> dict:
    """Metrics of the best weights (``best.pt``) on the validation and test splits."""
    best = run.output / run_files.BEST
    weights = read_payload(best)["state_dict"] if best.exists() else None
    return {name: run.evaluate(dataset, weights).metrics()
            for name, dataset in (("valid", run.splits.valid), ("test", run.splits.test)) if dataset is not None}
