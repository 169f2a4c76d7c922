"""The ``ids-trainer`` command line (typer). Training itself arrives with the trainer
issue; what is here already works on real data."""

from __future__ import annotations

import csv
import sys
from collections import Counter
from pathlib import Path

import typer

from ids_daemon.features.ciciot import COLUMNS, IDENTITY_COLUMNS, LEAKING

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Train and evaluate the ids-daemon model (CICIoT2023 CSVs, labelled captures).")

# columns of the newer (merged, 39-column) release that the original release names differently
MERGED_RENAMES = {"Time_To_Live": "Duration"}
MERGED_ONLY = {"IGMP"}
LABEL_NAMES = ("label", "Label")


@app.callback()
def _root() -> None:
    """Train and evaluate the ids-daemon model."""


@app.command()
def inspect(
    files: list[Path] = typer.Argument(..., help="CSV files: CICIoT2023 (either release) or ids-daemon features output"),
    label_column: str = typer.Option(None, "--label-column", help="label column (default: label or Label)"),
) -> None:
    """Say which CICIoT2023 release a CSV is, which feature columns it lacks or leaks, and its classes."""
    for path in files:
        try:
            fh = open(path, newline="")
        except OSError as e:
            print(f"ids-trainer: error: {path}: cannot open: {e.strerror}", file=sys.stderr)
            raise typer.Exit(1)
        with fh:
            reader = csv.reader(fh)
            try:
                header = next(reader)
            except StopIteration:
                print(f"ids-trainer: error: {path}: empty file", file=sys.stderr)
                raise typer.Exit(1)
            names = [MERGED_RENAMES.get(h, h) for h in header]
            have = set(names)
            label = label_column or next((n for n in LABEL_NAMES if n in have), None)
            if label_column and label_column not in have:
                print(f"ids-trainer: error: {path}: no column {label_column!r}", file=sys.stderr)
                raise typer.Exit(1)
            li = header.index(label) if label else None
            counts: Counter[str] = Counter()
            rows = 0
            for row in reader:
                rows += 1
                if li is not None and li < len(row):
                    counts[row[li]] += 1
        if set(IDENTITY_COLUMNS) <= have:
            kind = "ids-daemon features output"
        elif "Time_To_Live" in header or "IGMP" in have:
            kind = "CICIoT2023 merged release (39 features)"
        elif set(COLUMNS) <= have:
            kind = "CICIoT2023 original release (46 features)"
        else:
            kind = "unknown layout"
        missing = [c for c in COLUMNS if c not in have]
        extra = sorted(have - set(COLUMNS) - set(IDENTITY_COLUMNS) - MERGED_ONLY - {label} - set(LABEL_NAMES))
        print(f"{path}: {kind}, {rows} rows")
        print(f"  feature columns: {sum(c in have for c in COLUMNS)} of {len(COLUMNS)}"
              + (f"; missing: {', '.join(missing)}" if missing else ""))
        leaking = [c for c in LEAKING if c in have]
        if leaking:
            print(f"  leaking or constant (excluded from training by default): {', '.join(leaking)}")
        if extra:
            print(f"  other columns: {', '.join(extra)}")
        if label:
            top = ", ".join(f"{k} {v}" for k, v in counts.most_common(12))
            more = f" (+{len(counts) - 12} more)" if len(counts) > 12 else ""
            print(f"  label column {label!r}: {len(counts)} classes: {top}{more}")
        else:
            print("  no label column (label/Label); name one with --label-column")


def _load_cfg(config: Path | None, overrides: dict) -> "Config":
    from ids_daemon.config import load_config

    return load_config(config, overrides)


@app.command()
def train(
    data: list[Path] = typer.Option(..., "--data", help="CSV files/directories, or capture manifests (manifest.json or its directory)"),
    out: Path = typer.Option(..., "--out", help="model directory to write"),
    label_column: str = typer.Option(None, "--label-column", help="label column (default: label or Label); its values are used as they are"),
    labels: str = typer.Option(None, "--labels", help="34, 8 (families) or 2 (benign/attack) classes"),
    split: str = typer.Option(None, "--split", help="capture, time or stratified (default: capture when possible, else time)"),
    seq_len: int = typer.Option(None, "--seq-len", help="windows per sequence T"),
    seed: int = typer.Option(None, "--seed", help="random seed"),
    epochs: int = typer.Option(None, "--epochs", help="maximum epochs (early stopping may end sooner)"),
    config: Path = typer.Option(None, "--config", help="config.yml (lstm.* sections)"),
    device: str = typer.Option(None, "--device", help="auto, cpu, cuda, cuda:N"),
    include_leaking: bool = typer.Option(None, "--include-leaking/--no-leaking", help="train on the leaking columns too"),
    mlflow: bool = typer.Option(None, "--mlflow", help="log the run to MLflow (when installed)"),
) -> None:
    """Train the LSTM; writes the model directory with metrics.json and PNGs of the held-out split."""
    from .dataset import load_dataset
    from .train import train as run_train

    cfg = _load_cfg(config, {"lstm.train.labels": labels, "lstm.train.split": split, "lstm.train.seq_len": seq_len,
                             "lstm.train.seed": seed, "lstm.train.epochs": epochs, "lstm.train.device": device,
                             "lstm.features.include_leaking": include_leaking, "lstm.train.mlflow": mlflow})
    tc = cfg.lstm.train
    ds = load_dataset(data, tc.seq_len, tc.labels, label_column, cfg.lstm.features.include_leaking,
                      tc.max_per_class, tc.seed, cfg.meter, progress=sys.stderr.isatty())
    print(f"{len(ds.y)} sequences of {ds.x.shape[1]} x {len(ds.columns)} features, {len(ds.classes)} classes "
          f"({ds.source})", file=sys.stderr)
    try:
        res = run_train(ds, cfg, out)
    except ValueError as e:
        raise _user_error(str(e))
    _print_metrics(res.metrics)
    print(f"model written to {out}")


@app.command()
def evaluate(
    model: Path = typer.Option(..., "--model", help="model directory"),
    data: list[Path] = typer.Option(..., "--data", help="CSV files/directories or capture manifests"),
    out: Path = typer.Option(None, "--out", help="where to write the metrics (default: MODEL/evaluation.json)"),
    label_column: str = typer.Option(None, "--label-column", help="label column (default: the one the model was trained with, or label/Label)"),
    device: str = typer.Option("auto", "--device"),
    config: Path = typer.Option(None, "--config", help="config.yml (meter section, for captures)"),
) -> None:
    """Evaluate a trained model on other data; prints and writes the same metrics as training."""
    from ids_daemon.model.artifacts import load_model

    from .dataset import load_dataset
    from .metrics import write_json
    from .train import evaluate as run_eval

    loaded = load_model(model)
    meta = loaded.meta
    scheme = meta.get("label_scheme", "34")
    cfg = _load_cfg(config, {"meter.window": loaded.window})
    as_is = scheme == "as-is"
    if as_is and label_column is None:
        label_column = meta.get("data", {}).get("label_column")
    ds = load_dataset(data, loaded.seq_len, "34" if as_is else scheme, label_column, False,
                      10**9, 0, cfg.meter, columns=loaded.columns, progress=sys.stderr.isatty())
    try:
        m = run_eval(loaded, ds, device)
    except ValueError as e:
        raise _user_error(str(e))
    m["model"] = {"path": str(model), "name": meta.get("name"), "version": meta.get("version")}
    m["data"] = [str(d) for d in data]
    dest = out or (model / "evaluation.json")
    write_json(dest, m)
    _print_metrics(m)
    print(f"metrics written to {dest}")


@app.command()
def synth(
    out: Path = typer.Option(..., "--out", help="directory for the pcaps and manifest.json"),
    seed: int = typer.Option(0, "--seed"),
    packets: int = typer.Option(60_000, "--packets", help="approximate total packets"),
    classes: list[str] = typer.Option(None, "--class", help="only these classes (repeatable)"),
) -> None:
    """Write reproducible labelled captures (benign IoT traffic and 26 attack classes)."""
    from .synth import generate_corpus

    try:
        manifest = generate_corpus(out, seed=seed, packets=packets, classes=classes or None,
                                   progress=sys.stderr.isatty())
    except ValueError as e:
        raise _user_error(str(e))
    import json

    files = json.loads(manifest.read_text())["files"]
    print(f"{len(files)} captures, {sum(f['packets'] for f in files)} packets; manifest {manifest}")


BUNDLE_SEED = 0
BUNDLE_PACKETS = 400_000
BUNDLE_OVERRIDES = {
    # small enough for the daemon to classify every window of a gateway's traffic on a CPU
    "lstm.model.hidden_size": 64, "lstm.model.num_layers": 1, "lstm.features.bins": 8,
    # every scenario variant of the corpus is seen in training; the honest figure is the
    # evaluation on a corpus of another seed, which `bundle` writes to evaluation.json
    "lstm.train.seq_len": 4, "lstm.train.split": "stratified", "lstm.train.epochs": 40, "lstm.train.seed": BUNDLE_SEED,
}
BUNDLE_EVAL_SEED = 1


@app.command()
def bundle(
    out: Path = typer.Option(None, "--out", help="model directory (default: the package's bundled model)"),
    work: Path = typer.Option(None, "--work", help="where to keep the synthetic corpus (default: a temporary directory)"),
) -> None:
    """Reproduce the bundled model: synthetic corpus (seed 0), then training with fixed settings."""
    import tempfile

    from ids_daemon.model.artifacts import bundled_model_dir

    from .dataset import load_dataset
    from .synth import generate_corpus
    from .train import train as run_train

    dest = out or bundled_model_dir()
    with tempfile.TemporaryDirectory() as tmp:
        corpus = work or Path(tmp) / "corpus"
        generate_corpus(corpus, seed=BUNDLE_SEED, packets=BUNDLE_PACKETS)
        cfg = _load_cfg(None, BUNDLE_OVERRIDES)
        tc = cfg.lstm.train
        ds = load_dataset([corpus], tc.seq_len, tc.labels, None, False, tc.max_per_class, tc.seed, cfg.meter)
        res = run_train(ds, cfg, dest, name="ids-lstm-synthetic", version="1")
        _print_metrics(res.metrics)
        # the honest figure: traffic the model never saw, generated with another seed
        from ids_daemon.model.artifacts import load_model

        from .metrics import write_json
        from .train import evaluate as run_eval

        fresh = Path(tmp) / "fresh"
        generate_corpus(fresh, seed=BUNDLE_EVAL_SEED, packets=BUNDLE_PACKETS // 4)
        loaded = load_model(dest)
        eds = load_dataset([fresh], loaded.seq_len, tc.labels, None, False, 10**9, 0, cfg.meter, columns=loaded.columns)
        m = run_eval(loaded, eds)
        m["data"] = f"ids-trainer synth --seed {BUNDLE_EVAL_SEED} --packets {BUNDLE_PACKETS // 4}"
        write_json(dest / "evaluation.json", m)
    print("on a fresh corpus (seed {}):".format(BUNDLE_EVAL_SEED))
    _print_metrics(m)
    print(f"bundled model written to {dest}")


def _user_error(msg: str) -> typer.Exit:
    print(f"ids-trainer: error: {msg}", file=sys.stderr)
    return typer.Exit(1)


def _print_metrics(m: dict) -> None:
    split = m.get("split", {})
    where = f"held-out {split.get('method')} split" if split else m.get("evaluated_on", "")
    print(f"{where}: {m['samples']} sequences, accuracy {m['accuracy']:.4f}, macro-F1 {m['macro_f1']:.4f}, "
          f"weighted-F1 {m['weighted_f1']:.4f}")
    if m.get("benign_false_positive_rate") is not None:
        print(f"benign false-positive rate {m['benign_false_positive_rate']:.4f}, "
              f"attack detection rate {m['attack_detection_rate']:.4f}")
    width = max(len(c) for c in m["per_class"])
    print(f"  {'class':<{width}}  precision  recall     f1  support")
    for c, v in m["per_class"].items():
        if v["support"]:
            print(f"  {c:<{width}}  {v['precision']:9.3f} {v['recall']:7.3f} {v['f1']:6.3f} {v['support']:8d}")


def main() -> None:
    """Console entry point: user errors are one line on stderr, never a traceback."""
    from ids_daemon.errors import IdsError

    try:
        app()
    except IdsError as e:
        print(f"ids-trainer: error: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
