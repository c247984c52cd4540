"""An AMPEL/ANTARES-style unit: classify each ZTF alert packet on its object's history.

A broker calls ``process(packet)`` for every alert (a decoded ZTF Avro packet,
as fastavro yields it).  The unit keeps one classifier for its lifetime and a
bounded history of every object it has seen (see
:class:`convention_rt.HistoryCache` for the bounds and the eviction), so each
new alert is classified on the object's whole sequence of cut-outs, not on the
single cut-out it carries.

An alert that cannot be used (a corrupt packet, a cut-out mostly NaN or
sentinel values, a band the model does not know) is logged and skipped: the
classifier refuses it before it touches the object's history, and the unit
goes on with the next alert.  Errors of the model or the runtime
(``convention_rt.errors.ModelError``) are not the alert's fault and propagate.
"""

from __future__ import annotations

import logging
from typing import Any

from convention_rt import Classifier, HistoryCache
from convention_rt.errors import BadInputError
from convention_rt.ingest.ztf import parse_packet

log = logging.getLogger(__name__)


class ConventionUnit:
    """Classify ZTF alerts with ConvEntion.

    Parameters
    ----------
    model : str, optional
        Shipped model name or path to a .onnx file (default: the package's default).
    max_objects : int
        Objects whose history is kept before the least recently updated is evicted.
    """

    def __init__(self, model: str | None = None, max_objects: int = 100_000) -> None:
        self.classifier = Classifier(model, device="auto", threads=1)
        self.cache = HistoryCache(max_objects=max_objects, max_frames=self.classifier.card.seq_len)
        self.skipped = 0
        """Alerts refused so far (logged and skipped)."""

    def process(self, packet: dict[str, Any]) -> dict[str, Any] | None:
        """Classify one alert.

        Returns
        -------
        dict or None
            What a broker stores with the alert, or None when the alert was
            refused (logged as a warning, counted in ``skipped``; the object's
            history is unchanged).
        """
        try:
            alert = parse_packet(packet, source="stream", stamp="science")
            result = self.classifier.predict_alert(self.cache, alert.object_id, alert.stamp, [alert.band],
                                                   alert.mjd)
        except BadInputError as exc:
            self.skipped += 1
            log.warning("alert %s skipped: %s", packet.get("candid"), exc)
            return None
        return {
            "objectId": alert.object_id,
            "candid": alert.alert_id,
            "class": result.predicted,
            **{f"p_{c}": p for c, p in result.probabilities.items()},
            "spread": result.spread,
            "n_frames": result.n_frames,
            "status": result.status,
        }
