"""The daemon's pipeline: capture → meter → sequences → worker (micro-batches) → sinks.

Three threads joined by bounded queues, so a slow stage pushes back instead of growing
memory: the calling thread captures, meters and builds sequences; a worker thread
forms micro-batches (full at ``max_batch``, or when the oldest sequence waited
``max_wait_ms``) and runs the model; a sink thread writes the predictions. Replaying a
file, a full queue blocks the reader (nothing is dropped); capturing live, a full queue
drops the sequences that do not fit and counts them (the kernel ring keeps the capture
itself going).

Stopping (SIGINT/SIGTERM, end of file): capture stops, what the ring still holds is
read, every partial window and sequence goes through the model, the sinks are
flushed. SIGHUP reloads the model between two batches; no sequence is lost.
"""

from __future__ import annotations

import logging
import queue
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .config import Config
from .features.meter import Meter
from .features.window import POOL_PROTO_ARP
from .model.artifacts import LoadedModel, load_model
from .sequence import SequenceBatch, SequenceBuffer
from .sinks.base import EncodedBatch, Sink
from .inference.worker import InferenceWorker

log = logging.getLogger("ids_daemon.pipeline")

_END = object()


@dataclass
class PipelineStats:
    """Counters of one run (the status line and the summary print these)."""

    frames: int = 0
    windows: int = 0
    arp_windows: int = 0  # ARP windows the model leaves to the ARP detector (not classified)
    sequences: int = 0
    predictions: int = 0
    dropped_sequences: int = 0  # live only: the worker could not keep up
    detector_frames: int = 0  # frames a protocol-fact detector flagged
    findings: dict[str, int] = field(default_factory=dict)  # detector findings per class (before the rate limit)
    detector_predictions: int = 0  # findings published (after the rate limit)
    dropped_findings: int = 0  # live only: the sink queue was full
    batches: int = 0
    batch_sizes: list[int] = field(default_factory=list)
    reloads: int = 0
    seconds: float = 0.0
    busy: dict[str, float] = field(default_factory=lambda: {"read": 0.0, "meter": 0.0, "model": 0.0, "sinks": 0.0})
    error: str = ""

    @property
    def mean_batch(self) -> float:
        return float(np.mean(self.batch_sizes)) if self.batch_sizes else 0.0


@dataclass
class _Reload:
    loaded: LoadedModel


class Pipeline:
    """Wires a packet source, the meter, the sequence buffer, the worker and the sinks."""

    def __init__(self, cfg: Config, source: Any, live: bool, sinks: list[Sink], worker: InferenceWorker,
                 speed: float | None = None, status: bool = False, metrics: Any = None):
        self.cfg = cfg
        self.source = source
        self.live = live
        self.sinks = sinks
        self.worker = worker
        self.speed = speed
        self.status = status
        self.stats = PipelineStats()
        self.metrics = metrics  # a PipelineMetrics, or None
        if metrics is not None:
            metrics.pipeline = self
        meter_cfg = cfg.meter
        if meter_cfg.window != worker.window:
            log.warning("meter.window %d differs from the model's window %d: using the model's",
                        meter_cfg.window, worker.window)
            meter_cfg = meter_cfg.model_copy(update={"window": worker.window})
        self.meter = Meter(meter_cfg)
        self.detectors = None
        if cfg.detectors.enabled:
            from .detectors import DetectorSet
            from .detectors.publish import RateLimiter

            self.detectors = DetectorSet(cfg.detectors)
            self._limiter = RateLimiter(cfg.detectors.repeat_s)
        self.seqbuf = SequenceBuffer(worker.seq_len, worker.columns, meter_cfg.max_flows)
        qn = cfg.inference.queue_batches
        self._q_seq: queue.Queue = queue.Queue(maxsize=qn)
        self._q_out: queue.Queue = queue.Queue(maxsize=qn)
        self._stop = threading.Event()
        self._reload = threading.Event()
        self._failure: BaseException | None = None

    # ---- control ---------------------------------------------------------------------------
    def request_stop(self) -> None:
        """End the run cleanly (what was captured is still classified and written)."""
        self._stop.set()

    def request_reload(self) -> None:
        """Reload the model between two batches."""
        self._reload.set()

    def install_signal_handlers(self) -> None:
        """SIGINT/SIGTERM stop, SIGHUP reloads (main thread only)."""
        signal.signal(signal.SIGINT, lambda *_: self.request_stop())
        signal.signal(signal.SIGTERM, lambda *_: self.request_stop())
        signal.signal(signal.SIGHUP, lambda *_: self.request_reload())

    # ---- run -------------------------------------------------------------------------------
    def run(self) -> PipelineStats:
        """Run to the end of the input or until stopped; returns the counters."""
        t0 = time.perf_counter()
        for s in self.sinks:
            s.open()  # idempotent: the CLI may have opened them before dropping privileges
        worker_t = threading.Thread(target=self._guard(self._work), name="ids-worker", daemon=True)
        sink_t = threading.Thread(target=self._guard(self._write), name="ids-sinks", daemon=True)
        worker_t.start()
        sink_t.start()
        try:
            self._ingest()
        except BaseException as e:  # noqa: BLE001 - reported after the flush below
            self.stats.error = str(e)
            self._failure = self._failure or e
        finally:
            self._put(self._q_seq, _END, block=True)
            worker_t.join()
            sink_t.join()
            for s in self.sinks:
                try:
                    s.flush(timeout=30)
                finally:
                    s.close()
            self.stats.seconds = time.perf_counter() - t0
            if self.status:
                self._print_status(final=True)
        return self.stats

    def _guard(self, fn):
        def run() -> None:
            try:
                fn()
            except BaseException as e:  # noqa: BLE001 - a dead stage must stop the others
                self._failure = e
                self._stop.set()
                log.exception("pipeline stage failed")
                # keep draining so the other stages are never blocked on a full queue
                q = self._q_seq if fn == self._work else self._q_out
                while q.get() is not _END:
                    pass
                if fn == self._work:
                    self._put(self._q_out, _END, block=True)
        return run

    def _put(self, q: queue.Queue, item: object, block: bool) -> bool:
        if block:
            q.put(item)
            return True
        try:
            q.put_nowait(item)
            return True
        except queue.Full:
            return False

    # ---- stage 1: capture, meter, sequences (calling thread) -------------------------------
    def _ingest(self) -> None:
        src = self.source
        wall0 = ts0 = None
        last_status = time.monotonic()
        drain = 0
        while True:
            if self._failure is not None:
                raise RuntimeError(f"pipeline stage failed: {self._failure}")
            if self._stop.is_set():
                if not self.live or drain >= 3:
                    break
                drain += 1  # the kernel hands over a partly filled ring block within its timeout
            if self._reload.is_set():
                self._reload.clear()
                self._do_reload()
            t = time.perf_counter()
            batch = src.next_batch()
            self.stats.busy["read"] += time.perf_counter() - t
            if batch is None:
                break
            if len(batch) == 0:
                if self._stop.is_set():
                    break
                if self.live:
                    self._emit(self.meter.advance(time.time()).windows)
                continue
            if self.speed:
                if wall0 is None:
                    wall0, ts0 = time.monotonic(), float(batch.ts[0])
                lag = (float(batch.ts[0]) - ts0) / self.speed - (time.monotonic() - wall0)
                if lag > 0:
                    self._stop.wait(lag)
            self.stats.frames += len(batch)
            t = time.perf_counter()
            if self.detectors is not None:
                self._detect(batch)
            self._emit(self.meter.process(batch).windows)
            self.stats.busy["meter"] += time.perf_counter() - t
            if time.monotonic() - last_status >= 1.0:
                last_status = time.monotonic()
                self._read_kernel_stats()  # here, on the capture thread that owns the socket
                if self.status:
                    self._print_status()
        self._emit(self.meter.flush().windows)

    def _emit(self, windows: Any) -> None:
        if not len(windows):
            return
        self.stats.windows += len(windows)
        if self.worker.skip_arp:
            arp = windows.proto == POOL_PROTO_ARP
            if arp.any():
                self.stats.arp_windows += int(arp.sum())
                windows = windows.take(~arp)
                if not len(windows):
                    return
        seq = self.seqbuf.push(windows)
        self.stats.sequences += len(seq)
        if not self._put(self._q_seq, seq, block=not self.live):
            self.stats.dropped_sequences += len(seq)

    def _detect(self, batch: Any) -> None:
        """Run the protocol-fact detectors and publish their findings (rate-limited) on the
        sink queue, beside the model's predictions."""
        from .detectors.publish import encode_findings

        res = self.detectors.process(batch)
        if not res.findings:
            return
        self.stats.detector_frames += res.flagged()
        for f in res.findings:
            self.stats.findings[f.cls] = self.stats.findings.get(f.cls, 0) + 1
        keep = self._limiter.admit(res.findings)
        if not keep:
            return
        enc = encode_findings(keep, sensor=self.worker.sensor, id_prefix=self.worker.id_prefix,
                              first_id=self.stats.detector_predictions, now=time.time())
        self.stats.detector_predictions += len(keep)
        if not self._put(self._q_out, enc, block=not self.live):
            self.stats.dropped_findings += len(keep)

    def _do_reload(self) -> None:
        from .notify import notify

        notify("RELOADING=1")
        try:
            loaded = load_model(self.worker.model_dir, self.worker.device)
        except Exception as e:  # noqa: BLE001 - a bad model file must not stop the daemon
            log.error("model reload failed, keeping the current model: %s", e)
            notify("READY=1")
            return
        notify("READY=1")
        if self.worker.half:
            loaded.model.half()
        # sequences already queued were built for the old model: the worker switches at
        # this marker, after them
        self._put(self._q_seq, _Reload(loaded), block=True)
        from .features.ciciot import INDEX

        cols = np.array([INDEX[c] for c in loaded.columns])
        if loaded.seq_len != self.seqbuf.t or not np.array_equal(cols, self.seqbuf.cols):
            self.seqbuf = SequenceBuffer(loaded.seq_len, cols, self.seqbuf.max_keys)
        self.stats.reloads += 1

    # ---- stage 2: micro-batches through the model ------------------------------------------
    def _work(self) -> None:
        max_batch = self.cfg.inference.max_batch
        max_wait = self.cfg.inference.max_wait_ms / 1000.0
        pending: list[SequenceBatch] = []
        n_pending = 0
        oldest = 0.0
        done = False
        while not done:
            timeout = None if not pending else max(0.0, oldest + max_wait - time.monotonic())
            try:
                item = self._q_seq.get(timeout=timeout)
            except queue.Empty:
                item = None
            if item is _END:
                done = True
            elif isinstance(item, _Reload):
                self._run_batches(pending, max_batch, force=True)
                pending, n_pending = [], 0
                self.worker.install(item.loaded)
                self.worker.reloads += 1
                log.info("model reloaded: %s", self.worker.model_info)
                continue
            elif item is not None:
                if not pending:
                    oldest = time.monotonic()
                pending.append(item)
                n_pending += len(item)
            due = done or item is None or n_pending >= max_batch
            if pending and due:
                rest = self._run_batches(pending, max_batch, force=done or item is None)
                pending = [rest] if rest is not None and len(rest) else []
                n_pending = len(rest) if rest is not None else 0
                oldest = time.monotonic()
        self._put(self._q_out, _END, block=True)

    def _run_batches(self, pending: list[SequenceBatch], max_batch: int, force: bool) -> SequenceBatch | None:
        """Classify full batches (and the remainder when ``force``); return what is left."""
        if not pending:
            return None
        allseq = SequenceBatch.concat(pending)
        n = len(allseq)
        start = 0
        while n - start >= max_batch or (force and start < n):
            part = allseq.take(slice(start, min(start + max_batch, n)))
            t = time.perf_counter()
            out = self.worker.predict(part)
            dt = time.perf_counter() - t
            self.stats.busy["model"] += dt
            if self.metrics is not None:
                self.metrics.observe_batch(len(part), dt)
            self.stats.batches += 1
            self.stats.batch_sizes.append(len(part))
            self._put(self._q_out, out, block=True)
            start += len(part)
        return allseq.take(slice(start, n)) if start < n else None

    # ---- stage 3: sinks ----------------------------------------------------------------------
    def _write(self) -> None:
        while True:
            item = self._q_out.get()
            if item is _END:
                break
            assert isinstance(item, EncodedBatch)
            t = time.perf_counter()
            for s in self.sinks:
                s.write_batch(item)
            self.stats.busy["sinks"] += time.perf_counter() - t
            self.stats.predictions += len(item)

    # ---- status --------------------------------------------------------------------------------
    def _read_kernel_stats(self) -> None:
        """Fold the kernel's capture counters into the source's stats (live only), so the
        status line and the metrics show kernel drops as they happen, not only at the end."""
        read = getattr(self.source, "read_kernel_stats", None)
        if self.live and read is not None:
            try:
                read()
            except OSError:
                pass  # the interface went away: the capture loop reports that

    def kernel_drops(self) -> int | None:
        """Frames the kernel dropped (capture ring full); None when not capturing live."""
        sstats = getattr(self.source, "stats", None)
        return int(sstats.kernel_drops) if self.live and sstats is not None else None

    def _print_status(self, final: bool = False) -> None:
        c = self.meter.counters
        st = self.stats
        kd = self.kernel_drops()
        line = (f"packets {c.packets} flows {c.keys_tracked} windows {st.windows} predictions {st.predictions} "
                f"queue drops {st.dropped_sequences + st.dropped_findings}"
                + (f" kernel drops {kd}" if kd is not None else "") + f" batch {st.mean_batch:.0f}")
        print(("\r" + line + " " * 8) if not final else ("\r" + line + "\n"), end="", file=sys.stderr, flush=True)
