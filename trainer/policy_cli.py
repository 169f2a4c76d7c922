"""``ids-trainer policy``: episodes from labelled captures, and response policies trained
and measured on them (docs/rl.md)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from ids_daemon.errors import IdsError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
                  help="Response policies: record episodes, train an agent, measure it against the rule policies.")

_OPT_EPISODES = typer.Option(..., "--episodes", help="episode directory (ids-trainer policy episodes)")
_OPT_SOURCE = typer.Option(None, "--source", help="only this source's episodes (repeatable)")
_OPT_AVAIL = typer.Option(1.0, "--availability-cost", help="cost of a benign packet stopped (an attack packet let "
                                                            "through costs --attack-cost)")
_OPT_ATTACK = typer.Option(1.0, "--attack-cost", help="cost of an attack packet let through")
_OPT_CHANGE = typer.Option(2.0, "--change-cost", help="cost of a change of a host's action")
_OPT_PPS = typer.Option(10, "--rate-limit-pps", help="packets per second a rate-limited host keeps")
_OPT_DUR = typer.Option(None, "--duration", help="seconds an action stays in force (repeatable; default 15 60 300)")
_OPT_STEPS = typer.Option(60_000, "--timesteps", min=1, help="PPO steps of training (per fold)")
_OPT_SEED = typer.Option(0, "--seed")
_OPT_REPORT = typer.Option(None, "--report", help="write the report (JSON) here too")
_OPT_VAL = typer.Option(1 / 3, "--validation-share", min=0.0, max=0.5,
                        help="share of the training's real sources that choose the checkpoint (0: the last one)")
_OPT_SVAL = typer.Option(0.0, "--synthetic-validation-share", min=0.0, max=0.5,
                         help="share of each synthetic scenario's captures that also choose the checkpoint")
_OPT_SERVED = typer.Option(1 / 3, "--served-validation-share", min=0.0, max=0.5,
                           help="share of each synthetic scenario of floods on hosts with benign traffic that chooses "
                           "the checkpoint (with --validation-share > 0)")
_OPT_GAIN = typer.Option(0.01, "--min-gain", min=0.0, help="a PPO checkpoint replaces the imitation when its validation "
                         "reward is higher by this share of the validation's attack packets (and it stops no fewer)")
_OPT_CHECK = typer.Option(10_000, "--check-every", min=1, help="PPO steps between two checkpoints scored on validation")
_OPT_RESTARTS = typer.Option(3, "--restarts", min=1, help="PPO runs per fold (per training) from the same start, each "
                             "with its own seed derived from --seed; the checkpoint is chosen among all of them on "
                             "validation (one run without validation episodes)")
_OPT_RENT = typer.Option(0.05, "--restart-ent-coef", min=0.0, help="PPO's entropy bonus in restarts 1 and later (the "
                         "first's is 0.01): they explore more from the same start")
_OPT_WARM = typer.Option("auto", "--warm-start", help="rule policy the agent imitates before PPO: a baseline rule, "
                         "filter_if_attack or filter_and_hold (none: PPO from a random policy; auto: "
                         "filter_and_hold, or block_if_attack with --no-filter)")
_OPT_FILTER = typer.Option(True, "--filter/--no-filter", help="the agent's actions include filter (the host's inbound "
                           "packets of its flood's class only)")


def _fail(e: Exception) -> typer.Exit:
    print(f"ids-trainer: error: {str(e).splitlines()[0]}", file=sys.stderr)
    return typer.Exit(1)


def _reward(attack_cost: float, availability_cost: float, change_cost: float, pps: int,
            durations: Optional[list[float]], with_filter: bool = True):
    from ids_daemon.consumers.response import RewardConfig

    kw = {"durations": tuple(durations)} if durations else {}
    return RewardConfig(attack_cost=attack_cost, availability_cost=availability_cost, change_cost=change_cost,
                        rate_limit_pps=pps, filter=with_filter, **kw)


def _report(result: dict, report: Optional[Path]) -> None:
    from .policy import format_table

    print(format_table(result))
    if report is not None:
        report.write_text(json.dumps(result, indent=1) + "\n")
        print(f"report {report}")


@app.command()
def episodes(
    out: Path = typer.Option(..., "--out", help="directory for the episodes (predictions .jsonl, truth .npz)"),
    real: Optional[Path] = typer.Option(None, "--real", help="real-capture MANIFEST.tsv (default: ../shared/data/real)"),
    no_real: bool = typer.Option(False, "--no-real", help="no real captures (with --synthetic)"),
    synthetic: Optional[Path] = typer.Option(None, "--synthetic", help="also the synthetic corpus: the manifest.json "
                                             "of ids-trainer synth (source 'synthetic')"),
    sources: Optional[list[str]] = _OPT_SOURCE,
    model: Optional[str] = typer.Option(None, "--model", help="model directory the daemon replays with (default: bundled)"),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="config.yml for the daemon's pipeline"),
    file_batches: bool = typer.Option(False, "--file-batches", help="replay in the file reader's batches "
                                      "(capture.batch_size frames) instead of a live capture's "
                                      "(capture.block_timeout_ms of packet time)"),
) -> None:
    """Replay every labelled capture through the daemon; record its predictions and the truth.
    The episodes of the synthetic corpus are trained on in every fold of `evaluate`, never measured."""
    from ids_daemon.config import load_config

    from .cli import _real_manifest
    from .policy import build_episodes

    if no_real and synthetic is None:
        raise _fail(ValueError("--no-real needs --synthetic"))
    manifest = None if no_real else _real_manifest(real)
    try:
        rows = build_episodes(manifest, out, load_config(config, {}), model=model, sources=sources or None,
                              synthetic=synthetic, log=lambda m: print(m, file=sys.stderr),
                              live_batches=not file_batches)
    except (IdsError, ValueError) as e:
        raise _fail(e)
    print(f"{len(rows)} episodes, {sum(r['packets'] for r in rows)} packets "
          f"({sum(r['attack_packets'] for r in rows)} attack), {sum(r['predictions'] for r in rows)} predictions; "
          f"index {out / 'episodes.json'}")


@app.command()
def train(
    episodes_dir: Path = _OPT_EPISODES,
    out: Path = typer.Option(..., "--out", help="policy directory to write"),
    sources: Optional[list[str]] = _OPT_SOURCE,
    exclude: Optional[list[str]] = typer.Option(None, "--exclude-source", help="leave this source out (repeatable)"),
    timesteps: int = _OPT_STEPS,
    seed: int = _OPT_SEED,
    warm_start: str = _OPT_WARM,
    validation_share: float = _OPT_VAL, synthetic_validation_share: float = _OPT_SVAL, check_every: int = _OPT_CHECK,
    served_validation_share: float = _OPT_SERVED, min_gain: float = _OPT_GAIN, restarts: int = _OPT_RESTARTS,
    restart_ent_coef: float = _OPT_RENT,
    attack_cost: float = _OPT_ATTACK, availability_cost: float = _OPT_AVAIL, change_cost: float = _OPT_CHANGE,
    rate_limit_pps: int = _OPT_PPS, durations: Optional[list[float]] = _OPT_DUR, with_filter: bool = _OPT_FILTER,
) -> None:
    """Train a response policy (PPO) on episodes and write it as a policy directory; the
    checkpoint is chosen on --validation-share of the real sources (docs/rl.md)."""
    from ids_daemon.consumers.response import load_episodes

    from .policy import default_classes, default_warm_start, save_trained, train_agent, validation_split, warm_start_rule

    try:
        reward = _reward(attack_cost, availability_cost, change_cost, rate_limit_pps, durations, with_filter)
        warm_start = default_warm_start(reward) if warm_start == "auto" else warm_start
        eps = [e for e in load_episodes(episodes_dir, sources or None) if e.source not in set(exclude or [])]
        if not eps:
            raise ValueError("no episodes to train on")
        classes = default_classes()
        fit, val = validation_split(eps, seed, validation_share, train_only_share=synthetic_validation_share,
                                    served_share=served_validation_share)
        got = train_agent(fit, classes, reward, timesteps=timesteps, seed=seed,
                          warm_start=warm_start_rule(warm_start, reward), validation=val, check_every=check_every,
                          min_gain=min_gain, restarts=restarts, restart_ent_coef=restart_ent_coef)
        d = save_trained(out, got.net, fit, classes, reward, {"timesteps": timesteps, "seed": seed, "algorithm": "PPO",
                                                              "warm_start": warm_start, "check_every": check_every,
                                                              "min_gain": min_gain, "restarts": restarts,
                                                              "restart_ent_coef": restart_ent_coef,
                                                              "selection": got.selection})
    except (IdsError, ValueError) as e:
        raise _fail(e)
    sel = got.selection
    of = "" if sel["chosen_restart"] is None else f" of restart {sel['chosen_restart']}"
    print(f"policy {d} (trained on {len(fit)} episodes of {len({e.source for e in fit})} sources; chose "
          f"{sel['chosen']} at {sel['chosen_steps']} PPO steps{of} on {len(val)} validation episodes: "
          f"{sel['validation']})")


@app.command()
def evaluate(
    episodes_dir: Path = _OPT_EPISODES,
    policy: Optional[Path] = typer.Option(None, "--policy", help="measure this policy directory (default: train one "
                                          "per fold, measure it on the held-out sources)"),
    sources: Optional[list[str]] = _OPT_SOURCE,
    folds: int = typer.Option(2, "--folds", min=2, help="source folds (without --policy)"),
    timesteps: int = _OPT_STEPS,
    seed: int = _OPT_SEED,
    warm_start: str = _OPT_WARM,
    validation_share: float = _OPT_VAL, synthetic_validation_share: float = _OPT_SVAL, check_every: int = _OPT_CHECK,
    served_validation_share: float = _OPT_SERVED, min_gain: float = _OPT_GAIN, restarts: int = _OPT_RESTARTS,
    restart_ent_coef: float = _OPT_RENT,
    attack_cost: float = _OPT_ATTACK, availability_cost: float = _OPT_AVAIL, change_cost: float = _OPT_CHANGE,
    rate_limit_pps: int = _OPT_PPS, durations: Optional[list[float]] = _OPT_DUR, with_filter: bool = _OPT_FILTER,
    report: Optional[Path] = _OPT_REPORT,
) -> None:
    """The policy table by held-out source: attack packets stopped, benign packets lost,
    actions per hour and total reward, for the rule policies and the trained agent."""
    from ids_daemon.consumers.response import load_episodes

    from .policy import default_classes, default_warm_start, evaluate_by_source, evaluate_saved

    try:
        reward = _reward(attack_cost, availability_cost, change_cost, rate_limit_pps, durations, with_filter)
        warm_start = default_warm_start(reward) if warm_start == "auto" else warm_start
        eps = load_episodes(episodes_dir, sources or None)
        if not eps:
            raise ValueError("no episodes")
        if policy is not None:
            result = evaluate_saved(policy, eps, reward)
        else:
            result = evaluate_by_source(eps, default_classes(), reward, folds=folds, seed=seed, timesteps=timesteps,
                                        warm_start=warm_start, validation_share=validation_share,
                                        synthetic_validation_share=synthetic_validation_share,
                                        served_validation_share=served_validation_share, min_gain=min_gain,
                                        check_every=check_every, restarts=restarts,
                                        restart_ent_coef=restart_ent_coef, log=lambda m: print(m, file=sys.stderr))
    except (IdsError, ValueError) as e:
        raise _fail(e)
    _report(result, report)
