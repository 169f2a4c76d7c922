"""config.yml loading/validation, and the `ids-trainer inspect` command on the real samples."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from ids_daemon.config import Config, load_config
from ids_daemon.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
from .paths import DATA  # noqa: E402
from .helpers import TRAINER  # noqa: E402


def test_repository_config_documents_exactly_the_defaults() -> None:
    assert load_config(ROOT / "config.yml") == Config()
    text = (ROOT / "config.yml").read_text()
    c = Config()
    for section, model in (("capture", c.capture), ("meter", c.meter), ("lstm.model", c.lstm.model),
                           ("lstm.features", c.lstm.features), ("lstm.train", c.lstm.train),
                           ("inference", c.inference), ("kafka", c.kafka), ("metrics", c.metrics),
                           ("alert_pcap", c.alert_pcap)):
        for key in type(model).model_fields:
            assert f"  {key}:" in text, f"{section}.{key} is not documented in config.yml"


def test_overrides_win_and_none_is_ignored(tmp_path: Path) -> None:
    f = tmp_path / "c.yml"
    f.write_text("meter:\n  window: 20\ncapture:\n  snaplen: 128\n")
    cfg = load_config(f, {"meter.window": 100, "capture.snaplen": None, "meter.key_mode": "capture"})
    assert cfg.meter.window == 100 and cfg.capture.snaplen == 128 and cfg.meter.key_mode == "capture"
    assert cfg.meter.promote == 100  # promote_after follows the window by default


@pytest.mark.parametrize("text,words", [
    ("meter: [1, 2]\n", "meter"),
    ("meter:\n  window: ten\n", "meter.window"),
    ("meter:\n  key_mode: tuple\n", "meter.key_mode"),
    ("metre:\n  window: 5\n", "metre"),
    ("meter:\n  window: 5\n   bad indent: [\n", "not valid YAML"),
    ("- a list\n", "mapping"),
])
def test_bad_values_are_one_clear_line(tmp_path: Path, text: str, words: str) -> None:
    f = tmp_path / "c.yml"
    f.write_text(text)
    with pytest.raises(ConfigError) as ei:
        load_config(f)
    msg = str(ei.value)
    assert words in msg and "\n" not in msg and str(f) in msg


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.yml")


def test_trainer_inspect_recognises_both_releases_and_meter_output(tmp_path: Path) -> None:
    p = subprocess.run([TRAINER, "inspect", str(DATA / "ciciot2023_sample_39col.csv"),
                        "--label-column", "label_multiclass"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert "merged release (39 features), 19252 rows" in p.stdout
    assert "missing: flow_duration, Srate, Drate, urg_count, Magnitue, Radius, Covariance, Weight" in p.stdout
    assert "10 classes" in p.stdout and "Uploading 1252" in p.stdout
    p = subprocess.run([TRAINER, "inspect", str(DATA / "ciciot2023_excerpt_46col.csv")], capture_output=True, text=True)
    assert "original release (46 features), 13 rows" in p.stdout and "label column 'label': 11 classes" in p.stdout
    assert "IAT, Number, Weight, Drate, LLC, Srate" in p.stdout
    p = subprocess.run([TRAINER, "inspect", str(tmp_path / "none.csv")], capture_output=True, text=True)
    assert p.returncode == 1 and "cannot open" in p.stderr and "Traceback" not in p.stderr
