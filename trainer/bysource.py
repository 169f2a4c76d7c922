"""Evaluation by source: leave one repository out over the real corpus.

For every repository of the real-capture manifest, a model is trained on the other
repositories' captures (plus the synthetic corpus, when given) and measured on the
held-out repository's captures, packet by packet:

- ``benign_flagged``: share of benign packets that fall in attack-flagged windows (or
  that a protocol detector flagged);
- ``attack_flagged``: share of attack packets flagged;
- ``family_right``: share of attack packets whose verdict names the right family
  (DDoS and DoS count as one), as the mean over attack captures and overall.

A random split of windows is no evidence for traffic from another network: the
neighbouring windows of one capture are near copies. Holding out whole repositories
measures what a new site would see.

The same run measures, on the same windows and folds, a gradient-boosted tree on the
last window (the baseline to beat) and, optionally, a fixed model (the one before
this work), so the figures compare like with like.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ids_daemon.config import Config, DetectorsConfig, MeterConfig
from ids_daemon.features.ciciot import INDEX
from ids_daemon.features.window import KIND_POOL, POOL_PROTO_ARP, REASON_FULL, WindowBatch
from ids_daemon.inference.risk import kind_thresholds, row_thresholds
from ids_daemon.model.classes import FAMILY_OF, canonical_class, label_in_scheme
from ids_daemon.model.sequences import window_sequences

from .data.real import FrameDetector, LabelledCapture, meter_labelled, read_tsv_manifest
from .calibrate import fit_to_site as _site_operating_point
from .dataset import Dataset, meter_capture, model_columns, read_manifest, _rule_labels
from .metrics import benign_index, choose_threshold
from .split import Split
from .train import probabilities

# DDoS and DoS differ by the number of sources, which one sensor often cannot see
SAME_FAMILY = {"DDoS": "DoS"}


LOCKBOX_FOLD = "lockbox"  # the fold name when the lockbox's repositories are held out together


def family_key(name: str | None) -> str:
    """A family name with DDoS and DoS merged; '' for nothing."""
    if not name:
        return ""
    fam = FAMILY_OF.get(canonical_class(name) or "", name)
    return SAME_FAMILY.get(fam, fam)


@dataclass
class WindowSet:
    """The windows of one capture with their labels, ready to become sequences."""

    name: str
    source: str  # repository (real) or "synthetic"
    windows: WindowBatch
    labels: np.ndarray  # (k,) 34-class label of each window
    capture: LabelledCapture | None = None  # real captures: per-packet labels for the figures

    @property
    def lstm_mask(self) -> np.ndarray:
        """Windows the sequence model classifies: ARP is left to the ARP detector."""
        return self.windows.proto != POOL_PROTO_ARP


def detector_hooks(cfg: DetectorsConfig) -> Callable[[], FrameDetector]:
    """A factory of detector hooks, one fresh `DetectorSet` each (no state carried from one
    capture into the next)."""
    from ids_daemon.detectors import DetectorSet

    def make() -> FrameDetector:
        ds = DetectorSet(cfg)
        return lambda b: ds.process(b).frame_class

    return make


def real_windowsets(manifest: Path, meter: MeterConfig, detector: Callable[[], FrameDetector] | None = None,
                    progress: bool = False, claim: bool = False, lockbox: str = "include") -> list[WindowSet]:
    """Every capture of a real-capture manifest through the meter, labelled per packet;
    ``detector`` makes a fresh detector hook per capture (``claim``: its frames stay out
    of the windows); ``lockbox`` keeps or drops the lockbox's repositories."""
    out = []
    for e in read_tsv_manifest(manifest, lockbox=lockbox):
        if progress:
            print(f"metering {e.name}", file=sys.stderr, flush=True)
        lc = meter_labelled(e, meter, detector() if detector is not None else None, claim=claim)
        out.append(WindowSet(e.name, e.repo, lc.windows, lc.window_labels, lc))
    return out


def synthetic_windowsets(manifest: Path, meter: MeterConfig, claim: Callable[[], FrameDetector] | None = None
                         ) -> list[WindowSet]:
    """The captures of a synthetic corpus (``ids-trainer synth``), labelled by its rules
    (``claim``: a fresh detector hook per capture, whose frames stay out of the windows)."""
    out = []
    for f in read_manifest(manifest):
        wb = meter_capture(f["path"], meter, claim() if claim is not None else None)
        lab = _rule_labels(wb, str(f["label"]), list(f.get("rules", [])))
        lab = np.array([canonical_class(v) or v for v in lab], dtype=object)
        out.append(WindowSet(Path(f["path"]).name, "synthetic", wb, lab))
    return out


def build_dataset(sets: list[WindowSet], seq_len: int, columns: list[str], scheme: str,
                  classes: list[str] | None = None) -> tuple[Dataset, list[np.ndarray]]:
    """Sequences (last T windows of a key) of the LSTM's windows of ``sets``; also, per set,
    the positions of its windows in the dataset (-1 for windows left out)."""
    ci = np.array([INDEX[c] for c in columns])
    xs, ys, gs, os_, ws, ps, where = [], [], [], [], [], [], []
    n = 0
    for g, s in enumerate(sets):
        keep = s.lstm_mask
        pos = np.full(len(s.windows), -1, np.int64)
        wb = s.windows.take(keep)
        if len(wb):
            xs.append(window_sequences(wb, ci, seq_len))
            ys.append(np.array([label_in_scheme(v, scheme) for v in s.labels[keep]], dtype=object))
            gs.append(np.full(len(wb), g, np.int64))
            os_.append(wb.first_ts)
            ws.append(wb.packets.astype(np.float64))
            ps.append(wb.kind == KIND_POOL)
            pos[keep] = np.arange(n, n + len(wb))
            n += len(wb)
        where.append(pos)
    lab = np.concatenate(ys) if ys else np.zeros(0, object)
    cls = sorted(set(lab.tolist())) if classes is None else list(classes)
    lut = {c: i for i, c in enumerate(cls)}
    y = np.array([lut[v] for v in lab], dtype=np.int64)
    ds = Dataset(x=np.concatenate(xs) if xs else np.zeros((0, seq_len, len(columns)), np.float32), y=y,
                 classes=cls, columns=list(columns), groups=np.concatenate(gs) if gs else np.zeros(0, np.int64),
                 order=np.concatenate(os_) if os_ else np.zeros(0), source="captures",
                 summary={"seq_len": seq_len, "label_scheme": scheme}, weights=np.concatenate(ws) if ws else None,
                 pools=np.concatenate(ps) if ps else np.zeros(0, bool))
    return ds, where


def fold_split(ds: Dataset, test_groups: set[int], val_fraction: float, seed: int,
               benign_val_captures: float = 0.25) -> Split:
    """Train/validation from the groups not held out, test: the held-out groups.

    Validation holds out whole benign captures (``benign_val_captures`` of them, at
    random), so the threshold is chosen on benign traffic the model never saw, as a new
    site's will be; captures with attacks give the last ``val_fraction`` of their
    sequences (there are too few to hold out whole) for early stopping.
    """
    rng = np.random.default_rng(seed)
    is_test = np.isin(ds.groups, sorted(test_groups))
    b = benign_index(ds.classes)
    val = np.zeros(len(ds.y), dtype=bool)
    groups = np.unique(ds.groups[~is_test])
    benign_only = [g for g in groups if b is not None and (ds.y[ds.groups == g] == b).all()]
    pick = rng.permutation(benign_only)[:int(round(len(benign_only) * benign_val_captures))] if benign_only else []
    val[np.isin(ds.groups, list(pick))] = True
    for g in groups:
        if g in set(benign_only):
            continue
        idx = np.flatnonzero(ds.groups == g)
        idx = idx[np.argsort(ds.order[idx], kind="stable")]
        k = int(round(len(idx) * val_fraction))
        if len(idx) >= 4 and k:
            val[idx[len(idx) - k:]] = True
    train = np.flatnonzero(~is_test & ~val)
    return Split(train=train, val=np.flatnonzero(val), test=np.flatnonzero(is_test), method="by-source",
                 detail={"held_out_groups": sorted(int(g) for g in test_groups),
                         "validation_benign_captures": sorted(int(g) for g in pick)})


# ---- verdicts and figures ------------------------------------------------------------------
@dataclass
class Verdicts:
    """Per window of one capture: flagged or not, and the family named."""

    flagged: np.ndarray  # (k,) bool
    family: np.ndarray  # (k,) object: merged family names ('' when not flagged)
    margin: np.ndarray | None = None  # (k,) `margin` of the window, NaN where the model scored none


# issue 17's bound for the model alone: at most this share of benign packets flagged
ALONE_BENIGN_TARGET = 0.01
# edges of the margin histograms (`packet_figures`): a window's (1 - p_attack) over its fold's
# (1 - threshold), so 1 is the operating point and a factor k moves every fold's threshold alike
MARGIN_EDGES = np.concatenate([[0.0], np.logspace(-4, 4, 81)])


def margin(p_attack: np.ndarray, threshold: float | np.ndarray) -> np.ndarray:
    """(1 - p_attack) / (1 - threshold) (one threshold, or one per row): flagged at the operating
    point when <= 1."""
    return (1.0 - p_attack) / np.maximum(1.0 - np.asarray(threshold, dtype=np.float64), 1e-12)


def margin_histogram(m: np.ndarray) -> list[int]:
    """Packets by their window's margin, binned at `MARGIN_EDGES`: bin j holds the packets
    flagged with margins up to MARGIN_EDGES[j] and not up to MARGIN_EDGES[j - 1]; the last bin
    the packets no factor flags (no window: NaN)."""
    j = np.searchsorted(MARGIN_EDGES, m, side="left")  # m <= edge j
    j = np.where(np.isnan(m) | (j >= len(MARGIN_EDGES)), len(MARGIN_EDGES), j)
    return np.bincount(j, minlength=len(MARGIN_EDGES) + 1).tolist()


def best_alone(benign: list[int], unclaimed: list[int], benign_target: float) -> dict[str, Any] | None:
    """The one factor on every fold's 1 - threshold that flags the most unclaimed attack packets
    with at most ``benign_target`` of the benign ones, from the pooled margin histograms: how far
    the model alone could go if the recipe's threshold rule had been set knowing the held-out data
    (with one fold, any threshold at all). The operating point itself is the factor 1."""
    b, u = np.cumsum(benign), np.cumsum(unclaimed)  # flagged at a factor of MARGIN_EDGES[j]
    nb, nu = sum(benign), sum(unclaimed)
    if not nb or not nu:
        return None
    ok = np.flatnonzero(b[:len(MARGIN_EDGES)] <= benign_target * nb)
    if not ok.size:
        return None
    j = int(ok[-1])
    return {"factor": float(MARGIN_EDGES[j]), "benign_flagged_share": float(b[j] / nb),
            "unclaimed_flagged_share": float(u[j] / nu), "benign_target": benign_target}


def window_verdicts(probs: np.ndarray, classes: list[str], threshold: float | np.ndarray | None
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(flagged, family) from class probabilities: p_attack >= threshold (one, or one per row;
    argmax when None);
    the family is that of the likeliest attack class."""
    b = benign_index(classes)
    if b is None:
        flagged = np.ones(len(probs), dtype=bool)
        best = probs.argmax(1)
    else:
        pa = 1.0 - probs[:, b]
        flagged = pa >= threshold if threshold is not None else probs.argmax(1) != b
        masked = probs.copy()
        masked[:, b] = -1.0
        best = masked.argmax(1)
    fams = np.array([family_key(c) for c in classes], dtype=object)
    return flagged, np.where(flagged, fams[best], "")


def packet_figures(s: WindowSet, v: Verdicts, detector_classes: tuple[str, ...] = ()) -> dict[str, Any]:
    """Packet counts of one real capture under window verdicts and the detectors."""
    lc = s.capture
    assert lc is not None
    rw = lc.row_window
    inw = rw >= 0  # the rest were left to a detector: flagged by it below
    fl = np.zeros(len(rw), dtype=bool)
    fl[inw] = v.flagged[rw[inw]]
    fam = np.full(len(rw), "", dtype=object)
    fam[inw] = v.family[rw[inw]]
    det = lc.row_detector
    if detector_classes and (det >= 0).any():
        dfam = np.array([family_key(c) for c in detector_classes] + [""], dtype=object)[det]
        hit = det >= 0
        fl = fl | hit
        fam = np.where(hit, dfam, fam)
    attack = lc.row_attack
    want = family_key(lc.entry.label)
    # the model alone: its own verdicts, on the attack packets no detector claims
    model = np.zeros(len(rw), dtype=bool)
    model[inw] = v.flagged[rw[inw]]
    unclaimed = det < 0
    # which windows carry the benign packets the model flags, and the unclaimed attack packets it
    # has to find: flows or pools, full or cut short
    kinds: dict[str, list[int]] = {}
    ukinds: dict[str, list[int]] = {}
    if inw.any():
        w = s.windows
        wk = np.where(w.kind == KIND_POOL, "pool", "flow")
        wk = np.char.add(wk, np.where(w.reason == REASON_FULL, " full", " partial"))
        rk = wk[rw[inw]]
        b_in = ~attack[inw]
        u_in = attack[inw] & unclaimed[inw]
        for k in np.unique(rk).tolist():
            m = (rk == k) & b_in
            kinds[k] = [int(m.sum()), int((m & model[inw]).sum())]
            m = (rk == k) & u_in
            if m.any():
                ukinds[k] = [int(m.sum()), int((m & model[inw]).sum())]
    hist = {}
    if v.margin is not None:  # the model alone's margins of the benign and the unclaimed attack packets
        mg = np.full(len(rw), np.nan)
        mg[inw] = v.margin[rw[inw]]
        hist = {"model_margin_hist": {"benign": margin_histogram(mg[~attack]),
                                      "unclaimed": margin_histogram(mg[attack & unclaimed])}}
    return {**hist, "capture": s.name, "source": s.source, "label": lc.entry.label,
            "benign_packets": int((~attack).sum()), "benign_flagged": int((~attack & fl).sum()),
            "attack_packets": int(attack.sum()), "attack_flagged": int((attack & fl).sum()),
            "attack_family_right": int((attack & fl & (fam == want)).sum()),
            "model_benign_flagged": int((~attack & model).sum()),
            "attack_unclaimed": int((attack & unclaimed).sum()),
            "attack_unclaimed_flagged": int((attack & unclaimed & model).sum()),
            "benign_by_window_kind": kinds, "unclaimed_by_window_kind": ukinds}


def _by_kind(rows: list[dict[str, Any]], key: str) -> dict[str, list[int]]:
    """[packets, flagged by the model] per window kind, summed over capture rows."""
    kinds: dict[str, list[int]] = {}
    for r in rows:
        for k, (n, f) in r.get(key, {}).items():
            kinds.setdefault(k, [0, 0])
            kinds[k][0] += n
            kinds[k][1] += f
    return kinds


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Totals and shares over capture rows (packets), with the per-capture family mean."""
    tot = {k: sum(r.get(k, 0) for r in rows) for k in (
        "benign_packets", "benign_flagged", "attack_packets", "attack_flagged", "attack_family_right",
        "model_benign_flagged", "attack_unclaimed", "attack_unclaimed_flagged")}
    fam = [r["attack_family_right"] / r["attack_packets"] for r in rows if r["attack_packets"]]
    hists = [r["model_margin_hist"] for r in rows if "model_margin_hist" in r]
    alone = {}
    if hists:
        hb = np.sum([h["benign"] for h in hists], axis=0).tolist()
        hu = np.sum([h["unclaimed"] for h in hists], axis=0).tolist()
        alone = {"model_margin_hist": {"benign": hb, "unclaimed": hu},
                 "model_alone_best_factor": best_alone(hb, hu, ALONE_BENIGN_TARGET)}
    return {**tot, **alone,
            "model_benign_flagged_share": (tot["model_benign_flagged"] / tot["benign_packets"]
                                           if tot["benign_packets"] else None),
            "model_unclaimed_attack_flagged_share": (tot["attack_unclaimed_flagged"] / tot["attack_unclaimed"]
                                                     if tot["attack_unclaimed"] else None),
            "model_benign_by_window_kind": _by_kind(rows, "benign_by_window_kind"),
            "model_unclaimed_by_window_kind": _by_kind(rows, "unclaimed_by_window_kind"),
            "benign_flagged_share": tot["benign_flagged"] / tot["benign_packets"] if tot["benign_packets"] else None,
            "attack_flagged_share": tot["attack_flagged"] / tot["attack_packets"] if tot["attack_packets"] else None,
            "family_right_share": tot["attack_family_right"] / tot["attack_packets"] if tot["attack_packets"] else None,
            "family_right_mean_per_capture": float(np.mean(fam)) if fam else None,
            "attack_captures": len(fam)}


def by_source_table(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per source (repository) and overall."""
    sources = sorted({r["source"] for r in rows})
    return {"per_source": {s: summarise([r for r in rows if r["source"] == s]) for s in sources},
            "overall": summarise(rows)}


# ---- the run -------------------------------------------------------------------------------
@dataclass
class BySourceResult:
    """Figures per method (lstm, tree, fixed model) and the details per capture."""

    methods: dict[str, dict[str, Any]] = field(default_factory=dict)
    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    folds: list[dict[str, Any]] = field(default_factory=list)
    importance: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out = {"evaluation": "leave-one-repository-out over the real corpus",
               "methods": self.methods, "captures": self.rows, "folds": self.folds}
        if self.importance:
            out["permutation_importance"] = self.importance
        return out


def _tree(ds: Dataset, split: Split, target_fpr: float, seed: int, by_captures: bool = False
          ) -> tuple[Callable[[np.ndarray], np.ndarray], float]:
    """A gradient-boosted tree on the last window of each sequence (balanced classes); its
    operating point chosen by the LSTM's rule (``by_captures``: each validation capture
    counts the same)."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    def feats(x: np.ndarray) -> np.ndarray:
        last = x[:, -1, :].astype(np.float64)
        return np.nan_to_num(last, nan=0.0, posinf=1e12, neginf=-1e12)

    tr = split.train
    # a class with a single training sequence (the detectors claim nearly all of a held-out
    # repository's web attacks) cannot be learnt, and breaks the tree's stratified early stopping
    tr = tr[np.bincount(ds.y[tr], minlength=len(ds.classes))[ds.y[tr]] >= 2]
    counts = np.bincount(ds.y[tr], minlength=len(ds.classes)).astype(np.float64)
    sw = (counts.sum() / (len(ds.classes) * np.maximum(counts, 1)))[ds.y[tr]]
    clf = HistGradientBoostingClassifier(max_iter=200, learning_rate=0.1, random_state=seed)
    clf.fit(feats(ds.x[tr]), ds.y[tr], sample_weight=sw)
    present = list(clf.classes_)

    def predict(x: np.ndarray) -> np.ndarray:
        p = np.zeros((len(x), len(ds.classes)))
        if len(x):
            p[:, present] = clf.predict_proba(feats(x))
        return p

    b = benign_index(ds.classes)
    va = split.val
    pv = predict(ds.x[va])
    benign = ds.y[va] == b
    w = ds.weights_of(va)[benign]
    if by_captures:
        _, gi = np.unique(ds.groups[va][benign], return_inverse=True)
        w = w / np.bincount(gi, w)[gi]
    thr = choose_threshold(1.0 - pv[benign, b], w, target_fpr)
    return predict, thr


def run_by_source(real: list[WindowSet], synthetic: list[WindowSet], cfg: Config, *,
                  detector_classes: tuple[str, ...] = (), baseline_tree: bool = True,
                  fixed_models: dict[str, Any] | None = None, fixed_sets: dict[str, list[WindowSet]] | None = None,
                  only: list[str] | None = None, together: tuple[str, ...] = (),
                  importance: bool = False, calibration: float | None = None, log: Callable[[str], None] = lambda m: print(m, file=sys.stderr, flush=True)) -> BySourceResult:
    """Leave each repository of ``real`` out in turn (or, with ``together``, those repositories
    out at once: one fold); see the module docstring."""
    from .train import train

    tc = cfg.lstm.train
    scheme = tc.labels
    cols = [c for c in model_columns(list(INDEX), cfg.lstm.features.include_leaking)
            if c not in cfg.lstm.features.exclude]
    sets = real + synthetic
    ds, where = build_dataset(sets, tc.seq_len, cols, scheme)
    res = BySourceResult()
    sources = sorted({s.source for s in real})
    if only:
        sources = [s for s in sources if s in only]
    if together:
        # one fold holding these repositories out together (the lockbox: trained on the rest)
        sources = [LOCKBOX_FOLD]
    methods: dict[str, list[dict[str, Any]]] = {"lstm": [], "lstm_argmax": []}
    if baseline_tree:
        methods.update({"tree_0.5": [], "tree_at_target": []})
    for name in fixed_models or {}:
        methods[name] = []
    # the real corpus's attack captures, for the daemon's recall (detectors + LSTM) under a calibrated threshold
    real_attack = [(sets[g], where[g] >= 0, ds.x[where[g][where[g] >= 0]]) for g in range(len(real))
                   if sets[g].capture is not None and sets[g].capture.row_attack.any()]
    for k, src in enumerate(sources):
        t0 = time.time()
        held = {g for g, s in enumerate(sets) if s.source == src or (src == LOCKBOX_FOLD and s.source in together)}
        split = fold_split(ds, held, tc.val_fraction, tc.seed)
        r = train(ds, cfg, None, progress=False, split=split)
        op = r.metrics["operating_point"]
        thr = op["threshold"]
        fold = {"source": src, "threshold": thr, "epochs": r.metrics["training"]["epochs_run"],
                "train_sequences": int(len(split.train)), "test_sequences": int(len(split.test))}
        tree = _tree(ds, split, tc.target_fpr, tc.seed, tc.threshold_by == "captures") if baseline_tree else None
        if kind_thresholds(op) is not None:
            fold["thresholds_by_window_kind"] = dict(zip(("flow", "pool"), kind_thresholds(op)))
        if tree is not None:
            fold["tree_threshold"] = tree[1]
        # benign windows: p_attack, packets, first half, is a pool
        site_scores: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        site_x: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # their sequences and place in time
        for g in sorted(held):
            s = sets[g]
            pos = where[g]
            keep = pos >= 0
            x = ds.x[pos[keep]]
            verdicts: dict[str, Verdicts] = {}
            p = probabilities(r.model.cpu(), r.encoder, x)
            if calibration is not None and s.capture is not None and s.capture.entry.benign and len(p):
                ts = s.windows.first_ts[keep]
                rk = (np.argsort(np.argsort(ts, kind="stable")) + 0.5) / len(ts)
                site_scores.append((1.0 - p[:, benign_index(ds.classes)], s.windows.packets[keep].astype(float),
                                    rk <= 0.5, s.windows.kind[keep] == KIND_POOL))
                site_x.append((x, rk, ts))
            bi = benign_index(ds.classes)
            t_rows = row_thresholds(op, ds.pools[pos[keep]] if ds.pools is not None else None)
            mg = margin(1.0 - p[:, bi], t_rows) if bi is not None else None
            for mname, t in (("lstm", t_rows), ("lstm_argmax", None)):
                verdicts[mname] = _expand(len(s.windows), keep, *window_verdicts(p, ds.classes, t),
                                          margins=mg if t is not None else None)
            if tree is not None:
                pt = tree[0](x)
                verdicts["tree_0.5"] = _expand(len(s.windows), keep, *window_verdicts(pt, ds.classes, 0.5))
                verdicts["tree_at_target"] = _expand(len(s.windows), keep, *window_verdicts(pt, ds.classes, tree[1]))
            for mname, v in verdicts.items():
                methods[mname].append(packet_figures(s, v, detector_classes))
        if site_scores and calibration is not None:
            fold["calibration"] = _calibration_figures(r, ds, split, site_scores, op, calibration, site_x,
                                                       real_attack, detector_classes)
        if importance:
            fold["importance"] = permutation_importance(r.model.cpu(), r.encoder, ds, split.test, thr, tc.seed)
        fold["seconds"] = round(time.time() - t0, 1)
        res.folds.append(fold)
        lstm_rows = [x for x in methods["lstm"] if x["source"] == src or (src == LOCKBOX_FOLD and x["source"] in together)]
        sm = summarise(lstm_rows)
        log(f"[{k + 1}/{len(sources)}] {src}: benign flagged {_pct(sm['benign_flagged_share'])}, attack flagged "
            f"{_pct(sm['attack_flagged_share'])}, family right {_pct(sm['family_right_mean_per_capture'])} "
            f"(threshold {thr:.3f}, {fold['seconds']} s)")
    for name, fm in (fixed_models or {}).items():
        for s in (fixed_sets or {}).get(name, real):
            if only and s.source not in only:
                continue
            methods[name].append(packet_figures(s, fm(s), detector_classes))
    for name, rows in methods.items():
        res.methods[name] = by_source_table(rows)
        res.rows[name] = rows
    if importance:
        res.importance = summarise_importance(res.folds, ds.columns)
    return res


def _error(y: np.ndarray, pa: np.ndarray, w: np.ndarray, b: int, thr: float) -> float:
    """Share of benign weight flagged plus share of attack weight missed (what is defined)."""
    flagged = pa >= thr
    benign = y == b
    err = 0.0
    if w[benign].sum():
        err += w[benign & flagged].sum() / w[benign].sum()
    if w[~benign].sum():
        err += w[~benign & ~flagged].sum() / w[~benign].sum()
    return float(err)


def permutation_importance(model: Any, enc: Any, ds: Dataset, idx: np.ndarray, thr: float, seed: int,
                           ) -> dict[str, float]:
    """How much a held-out source's error (benign flagged + attack missed, by packets)
    grows when one column's values are replaced by values drawn from the whole data.

    A column the model leans on for this source but that carries no class evidence
    elsewhere (TTL: a capture's operating system and hop count) shows as a large rise on
    some sources and none on others; drawing from the whole data, not shuffling within
    the source, also works for sources of one class."""
    rng = np.random.default_rng(seed)
    b = benign_index(ds.classes)
    x = ds.x[idx]
    y, w = ds.y[idx], ds.weights_of(idx)
    base = _error(y, 1.0 - probabilities(model, enc, x)[:, b], w, b, thr)
    donors = rng.integers(0, len(ds.y), len(idx))
    out = {}
    for j, c in enumerate(ds.columns):
        xp = x.copy()
        xp[:, :, j] = ds.x[donors][:, :, j]
        out[c] = _error(y, 1.0 - probabilities(model, enc, xp)[:, b], w, b, thr) - base
    return out


def summarise_importance(folds: list[dict[str, Any]], columns: list[str]) -> dict[str, Any]:
    """Per column: mean rise of the error over sources, the largest, and where."""
    out = {}
    for c in columns:
        vals = [(f["importance"][c], f["source"]) for f in folds if "importance" in f]
        if not vals:
            continue
        v = np.array([a for a, _ in vals])
        top = max(vals)
        out[c] = {"mean": float(v.mean()), "max": float(top[0]), "max_source": top[1],
                  "sources_hurt": int((v > 0.01).sum())}
    return dict(sorted(out.items(), key=lambda kv: -kv[1]["mean"]))


MIN_CALIBRATION_PACKETS = 2000


def _calibration_figures(r: Any, ds: Dataset, split: Split,
                         scores: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
                         op: dict[str, Any], target: float, scores_x: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
                         real_attack: list[tuple[WindowSet, np.ndarray, np.ndarray]] = (),
                         detector_classes: tuple[str, ...] = ()) -> dict[str, Any] | None:
    """A site fitted on the first half (in time) of each of its benign captures and
    measured on the second half, with the fold's model (it never saw the site). The
    attack side is every attack sequence of the corpus under both thresholds, scored by
    the LSTM alone (``corpus_attack_*``), and every attack packet of the real corpus as the
    daemon flags it, detectors included (``real_attack_*``): what an operator's recall
    on those attacks becomes. The fold's operating point ``op`` may hold one threshold per
    window kind; fitted to the site, each kind keeps its own where stricter than the site's, and
    fine-tuning leaves the site's alone (as `ids-trainer calibrate` does)."""
    pa = np.concatenate([a for a, _, _, _ in scores])
    w = np.concatenate([b for _, b, _, _ in scores])
    first = np.concatenate([c for _, _, c, _ in scores])
    pools = np.concatenate([k for _, _, _, k in scores])
    thr = op["threshold"]
    rank = np.concatenate([rk for _, rk, _ in scores_x])  # position in time within its capture, 0..1
    if w[first].sum() < MIN_CALIBRATION_PACKETS / 2 or w[~first].sum() < MIN_CALIBRATION_PACKETS / 2:
        return None
    site = max(choose_threshold(pa[first], w[first], target), thr)
    after = _site_operating_point(op, site)
    b = benign_index(ds.classes)
    att = np.flatnonzero(ds.y != b)
    pat = 1.0 - probabilities(r.model.cpu(), r.encoder, ds.x[att])[:, b]
    aw = ds.weights_of(att)
    apools = ds.pools[att] if ds.pools is not None else None

    def share(p: np.ndarray, ww: np.ndarray, t: float | np.ndarray) -> float:
        return float(ww[p >= t].sum() / ww.sum()) if ww.sum() else 0.0

    before_rows, after_rows = row_thresholds(op, pools), row_thresholds(after, pools)
    out = {"target_fpr": target, "threshold_before": thr, "threshold_after": site,
           "first_half_packets": int(w[first].sum()), "second_half_packets": int(w[~first].sum()),
           "second_half_flagged_before": share(pa[~first], w[~first], _rows(before_rows, ~first)),
           "second_half_flagged_after": share(pa[~first], w[~first], _rows(after_rows, ~first)),
           "corpus_attack_flagged_before": share(pat, aw, row_thresholds(op, apools)),
           "corpus_attack_flagged_after": share(pat, aw, row_thresholds(after, apools))}
    if real_attack:
        out["real_attack_flagged_before"], out["real_attack_flagged_after"] = _daemon_recall(
            r.model.cpu(), r.encoder, ds.classes, real_attack, (op, after), detector_classes)
    # fine-tuning as `ids-trainer calibrate --fine-tune` does it: the first 70 % of the
    # first half trains (with replayed training sequences), the rest of the first half
    # chooses the threshold, the second half measures
    import copy
    from types import SimpleNamespace

    from .calibrate import fine_tune

    xs = np.concatenate([x for x, _, _ in scores_x])
    cut = first & (rank <= 0.7 * 0.5 + 1e-9)
    pick_thr = first & ~cut
    if cut.sum() >= 10 and pick_thr.sum() >= 10:
        tuned = SimpleNamespace(model=copy.deepcopy(r.model).cpu(), encoder=r.encoder, classes=ds.classes)
        rng = np.random.default_rng(0)
        rp = rng.choice(split.train, min(len(split.train), 20_000), replace=False)
        fine_tune(tuned, xs[cut], ds.x[rp], ds.y[rp])
        pa2 = 1.0 - probabilities(tuned.model, r.encoder, xs)[:, b]
        t2 = choose_threshold(pa2[pick_thr], w[pick_thr], target)
        pat2 = 1.0 - probabilities(tuned.model, r.encoder, ds.x[att])[:, b]
        out.update({"fine_tuned_threshold": t2, "second_half_flagged_fine_tuned": share(pa2[~first], w[~first], t2),
                    "corpus_attack_flagged_fine_tuned": share(pat2, aw, t2)})
        if real_attack:
            out["real_attack_flagged_fine_tuned"] = _daemon_recall(tuned.model, r.encoder, ds.classes, real_attack,
                                                                   ({"threshold": t2},), detector_classes)[0]
    out.update(calibration_auto(out))
    return out


def calibration_auto(c: dict[str, Any]) -> dict[str, Any]:
    """The figures of ``ids-trainer calibrate``'s default rule from one source's calibration
    record: fine-tuned when the site needed a threshold above the model's, else threshold only."""
    tuned = c["threshold_after"] > c["threshold_before"] and "second_half_flagged_fine_tuned" in c
    pick = "fine_tuned" if tuned else "after"
    out: dict[str, Any] = {"auto_fine_tuned": tuned}
    for k in ("second_half_flagged", "corpus_attack_flagged", "real_attack_flagged"):
        if f"{k}_{pick}" in c:
            out[f"{k}_auto"] = c[f"{k}_{pick}"]
    return out


def _rows(t: float | np.ndarray | None, m: np.ndarray) -> float | np.ndarray | None:
    """The thresholds of the rows ``m`` (one threshold for all: itself)."""
    return t[m] if isinstance(t, np.ndarray) else t


def _daemon_recall(model: Any, encoder: Any, classes: list[str], real_attack: list[tuple[WindowSet, np.ndarray, np.ndarray]],
                   ops: tuple[dict[str, Any], ...], detector_classes: tuple[str, ...]) -> list[float]:
    """Share of the real corpus's attack packets flagged by the detectors or by ``model`` under
    each of the operating points ``ops`` (the model scores every sequence once)."""
    flagged = [0] * len(ops)
    total = 0
    for s, keep, x in real_attack:
        p = probabilities(model, encoder, x) if len(x) else np.zeros((0, len(classes)))
        pools = s.windows.kind[keep] == KIND_POOL
        for k, op in enumerate(ops):
            thr = row_thresholds(op, pools)
            f = packet_figures(s, _expand(len(s.windows), keep, *window_verdicts(p, classes, thr)), detector_classes)
            flagged[k] += f["attack_flagged"]
        total += int(s.capture.row_attack.sum())
    return [n / total if total else 0.0 for n in flagged]


def _expand(k: int, keep: np.ndarray, flagged: np.ndarray, family: np.ndarray,
            margins: np.ndarray | None = None) -> Verdicts:
    f = np.zeros(k, dtype=bool)
    fam = np.full(k, "", dtype=object)
    f[keep] = flagged
    fam[keep] = family
    mg = None
    if margins is not None:
        mg = np.full(k, np.nan)
        mg[keep] = margins
    return Verdicts(f, fam, mg)


def fixed_model_verdicts(model_dir: Path) -> Callable[[WindowSet], Verdicts]:
    """Verdicts of an already trained model directory (its own columns, T and rule:
    the stored threshold, one per window kind where it has them, else argmax) on a capture's
    windows; every window, ARP included, as the daemon ran it."""
    from ids_daemon.model.artifacts import load_model

    loaded = load_model(model_dir)
    ci = np.array([INDEX[c] for c in loaded.columns])
    op = loaded.meta.get("operating_point") or {}

    def run(s: WindowSet) -> Verdicts:
        wb = s.windows
        if not len(wb):
            return Verdicts(np.zeros(0, bool), np.zeros(0, object))
        p = probabilities(loaded.model.cpu(), loaded.encoder, window_sequences(wb, ci, loaded.seq_len))
        return Verdicts(*window_verdicts(p, loaded.classes, row_thresholds(op, wb.kind == KIND_POOL)))

    return run


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.1f} %"


def format_table(result: dict[str, Any], method: str) -> str:
    """A plain-text table per source for one method."""
    m = result["methods"][method]
    lines = [f"{method} (with the detectors; then the model alone: its benign flagged, and its share of the "
             f"attack packets no detector claims):",
             f"  {'source':<48} {'benign pkts':>11} {'flagged':>8} {'attack pkts':>11} "
             f"{'flagged':>8} {'family':>8} {'alone:ben':>9} {'unclaimed':>9} {'flagged':>8}"]
    for src, v in list(m["per_source"].items()) + [("OVERALL", m["overall"])]:
        lines.append(f"  {src:<48} {v['benign_packets']:>11} {_pct(v['benign_flagged_share']):>8} "
                     f"{v['attack_packets']:>11} {_pct(v['attack_flagged_share']):>8} "
                     f"{_pct(v['family_right_mean_per_capture']):>8} {_pct(v.get('model_benign_flagged_share')):>9} "
                     f"{v.get('attack_unclaimed', 0):>9} {_pct(v.get('model_unclaimed_attack_flagged_share')):>8}")
    for key, what in (("model_benign_by_window_kind", "benign packets"),
                      ("model_unclaimed_by_window_kind", "unclaimed attack packets")):
        kinds = m["overall"].get(key) or {}
        if kinds:
            lines.append(f"  {what} the model alone flags, by window kind: " + ", ".join(
                f"{k} {f}/{n} ({_pct(f / n if n else None)})" for k, (n, f) in sorted(kinds.items())))
    best = m["overall"].get("model_alone_best_factor")
    if best:
        lines.append(f"  the model alone, every fold's 1 - threshold times one factor chosen on these held-out folds "
                     f"(a bound, not an operating point; 1: as run): x{best['factor']:.3g} flags "
                     f"{_pct(best['unclaimed_flagged_share'])} of the unclaimed attack packets at "
                     f"{_pct(best['benign_flagged_share'])} of benign (at most {_pct(best['benign_target'])})")
    return "\n".join(lines)


def format_calibration(result: dict[str, Any]) -> str:
    """The calibration figures per benign source (fitted on the first half, measured on the second)."""
    rows = [f for f in result["folds"] if f.get("calibration")]
    if not rows:
        return "calibration: no held-out benign source had enough traffic"
    t = rows[0]["calibration"]["target_fpr"]
    lines = [f"calibration (target {100 * t:g} %, first half of each benign source fits, second half measured):",
             f"  {'source':<48} {'2nd half flagged: before':>24} {'threshold':>10} {'fine-tuned':>10}"
             f" {'corpus attacks flagged: before':>30} {'threshold':>10} {'fine-tuned':>10}"
             f" {'real attacks, daemon: before':>28} {'threshold':>10} {'fine-tuned':>10}"
             f" {'default rule: 2nd half':>22} {'real attacks':>12}"]
    for f in rows:
        c = f["calibration"]
        lines.append(f"  {f['source']:<48} {_pct(c['second_half_flagged_before']):>24} "
                     f"{_pct(c['second_half_flagged_after']):>10} {_pct(c.get('second_half_flagged_fine_tuned')):>10} "
                     f"{_pct(c['corpus_attack_flagged_before']):>30} {_pct(c['corpus_attack_flagged_after']):>10} "
                     f"{_pct(c.get('corpus_attack_flagged_fine_tuned')):>10} "
                     f"{_pct(c.get('real_attack_flagged_before')):>28} {_pct(c.get('real_attack_flagged_after')):>10} "
                     f"{_pct(c.get('real_attack_flagged_fine_tuned')):>10} "
                     f"{_pct(c.get('second_half_flagged_auto')):>16} ({'tuned' if c.get('auto_fine_tuned') else 'thr.'}) "
                     f"{_pct(c.get('real_attack_flagged_auto')):>12}")
    return "\n".join(lines)
