"""Prometheus metrics of a running pipeline, served on loopback by default.

Counters are read from the stages at scrape time (a collector), so the packet path
pays nothing for them; only per-batch quantities (inference latency, predictions by
class and severity) are recorded as they happen, once per micro-batch.
"""

from __future__ import annotations

import logging
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily

log = logging.getLogger("ids_daemon.metrics")

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0)
BATCH_BUCKETS = (1, 4, 16, 64, 128, 256, 512, 1024, 2048, 4096)


class PipelineMetrics:
    """The registry of one pipeline; `observe_batch` is called by the worker stage."""

    def __init__(self, sensor: str | None = None, interface: str | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        # which instance this endpoint belongs to, when several run on one host
        self.instance = {"sensor": sensor or "", "interface": interface or ""}
        self.latency = Histogram("ids_inference_latency_seconds", "Time to classify one micro-batch",
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.batch_size = Histogram("ids_inference_batch_size", "Sequences per micro-batch",
                                    buckets=BATCH_BUCKETS, registry=self.registry)
        self.pipeline: Any = None
        self.registry.register(_Collector(self))
        self._server = None

    def observe_batch(self, size: int, seconds: float) -> None:
        self.latency.observe(seconds)
        self.batch_size.observe(size)

    def serve(self, listen: str) -> bool:
        """Start the HTTP endpoint at ``host:port``; a busy port is logged, not fatal."""
        host, _, port = listen.rpartition(":")
        try:
            self._server, _ = start_http_server(int(port), addr=host.strip("[]") or "127.0.0.1",
                                                registry=self.registry)
        except OSError as e:
            log.warning("metrics endpoint %s not started: %s (several instances on one host: give each its own "
                        "--metrics-listen HOST:PORT)", listen, e.strerror or e)
            return False
        return True

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None


class _Collector:
    def __init__(self, owner: PipelineMetrics):
        self.owner = owner

    def describe(self) -> list:
        return []

    def collect(self):  # noqa: C901 - one metric family after another
        p = self.owner.pipeline
        if p is None:
            return
        st = p.stats
        c = p.meter.counters
        src = getattr(p.source, "stats", None)

        def counter(name: str, doc: str, value: float, labels: dict[str, str] | None = None):
            m = CounterMetricFamily(name, doc, labels=list(labels) if labels else None)
            m.add_metric(list(labels.values()) if labels else [], value)
            return m

        def gauge(name: str, doc: str, value: float):
            m = GaugeMetricFamily(name, doc)
            m.add_metric([], value)
            return m

        yield counter("ids_packets", "Frames read from the source", st.frames)
        if src is not None:
            yield counter("ids_bytes", "Captured bytes read from the source", src.bytes)
            yield counter("ids_kernel_packets", "Frames the kernel delivered to the capture socket (live)",
                          src.kernel_packets)
            yield counter("ids_kernel_drops", "Frames the kernel dropped: capture ring full (live)", src.kernel_drops)
        yield counter("ids_meter_packets", "IPv4, IPv6 and ARP packets metered (one row each)", c.packets)
        yield counter("ids_meter_skipped", "Frames not metered (neither IP nor ARP: LLDP, STP, ...)", c.skipped)
        yield counter("ids_meter_malformed", "Malformed frames skipped", c.malformed)
        yield counter("ids_detector_claimed", "Frames a protocol-fact detector flagged and the model leaves to it "
                      "(not metered; models with detector_claims)", st.claimed_frames)
        yield gauge("ids_flows_tracked", "Keys in the flow table", c.keys_tracked)
        yield counter("ids_flows_created", "Flows created", c.flows_created)
        yield counter("ids_flows_evicted", "Keys evicted by the table cap", c.evicted)
        yield counter("ids_flows_expired_idle", "Keys expired on the idle timeout", c.expired_idle)
        yield counter("ids_flows_expired_active", "Flows restarted on the active timeout", c.expired_active)
        yield counter("ids_windows", "Windows produced by the meter", st.windows)
        yield counter("ids_sequences", "Sequences built for the model", st.sequences)
        yield counter("ids_queue_drops", "Sequences dropped because the worker could not keep up (live; with "
                      "coalescing: keys beyond inference.coalesce_keys)",
                      st.dropped_sequences)
        yield counter("ids_queue_coalesced", "Sequences superseded by a newer sequence of the same key while the "
                      "worker could not keep up (live, inference.overload: coalesce); that key's newest was classified",
                      st.coalesced_sequences)
        yield counter("ids_findings_dropped", "Detector findings dropped because the sink queue was full (live)",
                      st.dropped_findings)
        yield counter("ids_model_reloads", "Model reloads (SIGHUP)", st.reloads)
        yield counter("ids_model_reload_failures", "Model reloads refused (bad model, other window N)",
                      st.reload_failures)
        ap = getattr(p, "alert_pcap", None)
        if ap is not None:
            a = ap.stats
            yield counter("ids_alert_pcap_packets", "Packets of alerts written to the alert pcap files", a.packets)
            yield counter("ids_alert_pcap_alerts", "Alerts whose packets were asked for", a.triggers)
            yield counter("ids_alert_pcap_dropped_packets", "Packets of alerts not written: the write failed "
                          "(directory unusable, disk full)", a.packets_dropped)
            yield counter("ids_alert_pcap_write_errors", "Failed writes of the alert pcap", a.write_errors)
            yield counter("ids_alert_pcap_lagged_batches", "Batches that left the ring before the alert pcap "
                          "writer saw them", a.lagged_batches)
        w = p.worker
        if w is None:
            return  # features: no model
        yield counter("ids_predictions_refused", "Predictions not published: invalid under the v1 schema "
                      "(non-finite model output)", w.refused)
        byc = CounterMetricFamily("ids_predictions", "Predictions by class", labels=["class", "family"])
        # zip, not indexing: a reload on the worker thread may be swapping these lists now
        for name, fam, n in zip(w.classes, w.families, w.class_counts.tolist()):
            byc.add_metric([name, fam], float(n))
        yield byc
        bys = CounterMetricFamily("ids_predictions_by_severity", "Predictions by severity", labels=["severity"])
        from .predictions.vocabulary import SEVERITIES

        for i, name in enumerate(SEVERITIES):
            bys.add_metric([name], float(w.severity_counts[i]))
        yield bys
        for s in p.sinks:
            ss = s.stats
            for field, doc in (("delivered", "Predictions delivered"), ("failed", "Sends that failed (spooled)"),
                               ("spooled", "Predictions written to the spool"),
                               ("dropped", "Predictions lost for good (spool full)")):
                yield counter(f"ids_sink_{field}", doc, getattr(ss, field), {"sink": s.name})
            yield _gauge_l("ids_sink_spool_bytes", "Bytes in the sink's on-disk spool", ss.spool_bytes, s.name)
        inst = InfoMetricFamily("ids_sensor", "The sensor this endpoint belongs to (name and capture interface)")
        inst.add_metric([], self.owner.instance)
        yield inst
        info = InfoMetricFamily("ids_model", "The model in use")
        info.add_metric([], {"name": w.model_info["name"], "version": w.model_info["version"],
                             "device": str(w.device)})
        yield info


def _gauge_l(name: str, doc: str, value: float, sink: str) -> GaugeMetricFamily:
    m = GaugeMetricFamily(name, doc, labels=["sink"])
    m.add_metric([sink], value)
    return m
