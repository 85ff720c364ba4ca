"""Offline evaluation: the protocol (:mod:`.protocol`), tuned baselines (:mod:`.baselines`),
the whole evaluation (:mod:`.offline`) and its tables and plots (:mod:`.report`)."""

from socialrec.data.eventlog import SplitBounds
from socialrec.evaluation.offline import OfflineReport, run_offline_evaluation
from socialrec.evaluation.protocol import Requests, build_requests, score_lists

__all__ = [
    "OfflineReport",
    "Requests",
    "SplitBounds",
    "build_requests",
    "run_offline_evaluation",
    "score_lists",
]
