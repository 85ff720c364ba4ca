"""The ranker's training rows: replayed requests of the validation split.

For every window of the validation split ``[validation_start, test_start)`` (a UTC day each,
unless the split is longer than ``ranker_max_snapshots`` days: then that many windows of whole
days):

1. a :class:`socialrec.recommender.replay.Snapshot` as of the window's start: the catalog, the
   neighbours and the users' and posts' features as they were at that midnight, and the
   two-tower model fitted on the train split (a model that never saw the window's events);
2. the window's requests (:func:`socialrec.evaluation.protocol.build_requests`) go through the
   service's retrieval and filtering stages, as the service would have answered them;
3. each candidate is labelled with the outcomes its user had with it that day
   (``socialrec.models.ranker.OUTCOMES``) and gets the ranking stage's features (the same
   ``ranking_features`` the service computes). Positives missing from the candidates are not
   added: the ranker never sees a post the sources would not have given it.

Held-out users (:func:`holdout_users`, a hash of the id) keep ALL their candidates; the others
every positive and a ``ranker_negative_share`` sample (socialrec.training.ranker fits on them).
"""

from __future__ import annotations

import importlib
import os
import pickle
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from socialrec.data.eventlog import EventLog
from socialrec.evaluation.protocol import OUTCOMES, Requests, build_requests
from socialrec.models.ranker import label
from socialrec.recommender.replay import FeatureReader, Snapshot
from socialrec.timeutil import DAY_SECONDS, epoch_seconds, to_timestamp

HOLDOUT_SHARE = 0.2


def holdout_users(users: np.ndarray, share: float = HOLDOUT_SHARE) -> np.ndarray:
    """Whether each user is held out (a stable hash of the id)."""
    h = pd.util.hash_array(np.asarray(users, dtype=np.int64), categorize=False)
    return (h % 1000) < int(share * 1000)


def candidate_rows(
    recommender, seen, requests: Requests, keep_all: np.ndarray, negative_share: float, seed: int
) -> pd.DataFrame:
    """The ranker's rows for replayed ``requests``: the features of every kept candidate, one
    ``y_<outcome>`` label column per outcome, ``request``, ``user_id``, ``post_id`` and the
    merged source score. ``keep_all[i]``: keep every candidate of request i (held out users),
    else every positive and a ``negative_share`` sample of the rest."""
    from socialrec.recommender.ranking import candidate_features

    rng = np.random.default_rng(seed)
    parts = []
    for i, (user, ts) in enumerate(requests.frame[["user_id", "ts"]].itertuples(index=False)):
        seen.current = set(requests.seen[i].tolist())
        ctx = recommender.context(int(user), to_timestamp(int(ts)))
        cands, _ = recommender.candidates(ctx)
        if cands.empty:
            continue
        labels = {o: cands["post_id"].isin(requests.outcomes[o][i]).to_numpy() for o in OUTCOMES}
        if not keep_all[i]:
            keep = labels["positive"] | (rng.random(len(cands)) < negative_share)
            cands = cands[keep].reset_index(drop=True)
            labels = {o: v[keep] for o, v in labels.items()}
        post_rows = recommender.features.posts(cands["post_id"].tolist())
        kept, _, feats = candidate_features(
            ctx.user_df, post_rows, cands, recommender.feature_builder, ctx.now
        )
        if feats.empty:
            continue
        known = cands["post_id"].isin(kept["post_id"]).to_numpy()
        feats = feats.assign(
            **{label(o): labels[o][known].astype(np.int8) for o in OUTCOMES},
            request=int(requests.frame["request"].iat[i]),
            day=int(requests.frame["day"].iat[i]),
            user_id=int(user),
            post_id=kept["post_id"].to_numpy(dtype=np.int64),
        )
        parts.append(feats)
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def training_windows(start: int, end: int, max_windows: int) -> list[tuple[int, int]]:
    """``[start, end)`` cut into at most ``max_windows`` windows of whole UTC days (one day
    each when the split is short enough: a feed's daily snapshots; longer windows for a log of
    years). Each window is replayed from one snapshot as of its start."""
    days = max(1, -(-(end - start) // DAY_SECONDS))
    per = max(1, -(-days // max(1, max_windows)))
    windows = []
    t = start
    while t < end:
        nxt = min((t // DAY_SECONDS + per) * DAY_SECONDS, end)
        windows.append((t, nxt))
        t = nxt
    return windows


def window_rows(
    window: tuple[int, int],
    settings,
    log: EventLog,
    posts: pd.DataFrame,
    created: Mapping[int, int] | pd.Series,
    per_window: int,
    read_features: FeatureReader,
    two_tower,
    neighbour_params=None,
) -> tuple[pd.DataFrame, int] | None:
    """One window's replayed rows and how many requests it replayed (at most ``per_window``,
    sampled); None when nobody asked anything in it."""
    w_start, w_end = window
    requests = build_requests(log, created, w_start, w_end, seed=settings.seed)
    if len(requests) > per_window:
        rng = np.random.default_rng(settings.seed + w_start)
        keep = rng.choice(len(requests), per_window, replace=False)
        requests = requests.subset(np.sort(keep))
    if not len(requests):
        return None
    snap = Snapshot.build(
        w_start, log, posts, read_features, settings, two_tower, neighbour_params,
        users=requests.users,
    )  # fmt: skip
    rec, seen = snap.recommender(None, settings)
    keep_all = holdout_users(requests.users)
    rows = candidate_rows(
        rec, seen, requests, keep_all, settings.ranker_negative_share, settings.seed
    )
    return rows, len(requests)


# what a replay imports (Feast, TensorFlow, CatBoost: ~10 s), imported by an :class:`Elsewhere`
# process as soon as it starts, while the training's process prepares the first call
PRELOAD = (
    "socialrec.training.retrieval",
    "socialrec.models.two_tower",
    "socialrec.models.ranker",
    "socialrec.recommender.replay",
)


class Elsewhere:
    """Another Python process (``python -m`` this module) that runs ``fn(*args)`` calls one
    after the other: :meth:`submit` returns at once, :meth:`result` waits for the oldest
    answer not yet collected. Started at once, it imports ``preload`` (default:
    :data:`PRELOAD`) while this process prepares its first call; it serves the training
    windows, then the gate's requests.
    Arguments and answers travel as pickle files: a process started afresh, not forked from
    this one (which may run threads, TensorFlow's), and that imports no ``__main__`` of the
    caller (a script, a Dagster run)."""

    def __init__(self, preload: Sequence[str] | None = None):
        preload = PRELOAD if preload is None else preload
        self._dir = tempfile.TemporaryDirectory(prefix="socialrec-replay-")
        self._work = Path(self._dir.name)
        self._err = open(self._work / "stderr", "w+")  # noqa: SIM115 - closed in close()
        self._proc = subprocess.Popen(
            [sys.executable, "-m", __name__, str(self._work), *preload],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._err,
            text=True,
        )
        self._sent = self._collected = 0

    def submit(self, fn, *args) -> None:
        n = self._sent
        data = pickle.dumps((fn, args), pickle.HIGHEST_PROTOCOL)
        (self._work / f"in-{n}.pkl").write_bytes(data)
        self._proc.stdin.write(f"{n}\n")
        self._proc.stdin.flush()
        self._sent += 1

    def result(self):
        """The answer of the oldest call not collected yet; its error is raised here."""
        n = self._collected
        self._collected += 1
        answer = self._proc.stdout.readline().strip()
        if answer != f"ok {n}":
            self._err.seek(0)
            tail = self._err.read()[-4000:]
            why = answer or f"exit {self._proc.wait()}"
            raise RuntimeError(f"a replay process failed (call {n}: {why}):\n{tail}")
        out = self._work / f"out-{n}.pkl"
        try:
            return pickle.loads(out.read_bytes())
        finally:
            out.unlink()

    def close(self) -> None:
        """End the process (at once when a call is still running: an error on this side) and
        clean up."""
        if self._proc.poll() is None:
            if self._collected < self._sent:
                self._proc.kill()
            self._proc.stdin.close()  # its end of the calls
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc.stdout.close()
        self._err.close()
        self._dir.cleanup()

    @staticmethod
    def picklable(*args) -> bool:
        """Whether ``args`` can go to another process (a feature reader or a model that lives
        only in this one cannot: then the work stays here)."""
        try:
            pickle.dumps(args)
        except (TypeError, AttributeError, pickle.PicklingError):
            return False
        return True


@contextmanager
def replay_processes(n: int) -> Iterator[list[Elsewhere]]:
    """``n`` :class:`Elsewhere` processes for the replays of one ranker training (its windows,
    then its gate: ``settings.ranker_replay_processes`` - 1), ended with the block."""
    others = [Elsewhere() for _ in range(max(0, n))]
    try:
        yield others
    finally:
        for other in others:
            other.close()


def side_by_side(
    settings, others: Sequence[Elsewhere] | None, units: int, *sent
) -> tuple[int, AbstractContextManager[Sequence[Elsewhere]]]:
    """(k, the other processes) for ``units`` replays side by side: ``others``, or k - 1 of
    :func:`replay_processes` (k from ``settings.ranker_replay_processes``); k is 1 when
    ``sent`` (a feature reader, a model) cannot go to another process."""
    k = max(1, min(settings.ranker_replay_processes if others is None else len(others) + 1, units))
    if k > 1 and not Elsewhere.picklable(*sent):
        k = 1  # the data always pickles; a reader or a model may live only in this process
    return k, replay_processes(k - 1) if others is None else nullcontext(others)


def build_training_set(
    settings,
    log: EventLog,
    posts: pd.DataFrame,
    created: Mapping[int, int] | pd.Series,
    start: int,
    end: int,
    read_features: FeatureReader,
    two_tower,
    neighbour_params=None,
    progress=None,
    others: Sequence[Elsewhere] | None = None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Replayed candidate rows of every window of ``[start, end)`` (the module docstring);
    ``progress`` hears a line per replayed window. The windows are replayed side by side by
    this process and k - 1 others (:func:`side_by_side`): window i here when i % k is 0, else
    by other i % k - 1; the same code on the same data, so the same rows, in window order."""
    frames, info = [], {"windows": 0, "requests": 0, "candidates_per_request": 0.0}
    windows = training_windows(start, end, settings.ranker_max_snapshots)
    per_window = max(1, settings.ranker_max_requests // max(1, len(windows)))
    shared = (settings, log, posts, created, per_window, read_features, two_tower)
    k, processes = side_by_side(settings, others, len(windows), read_features, two_tower)
    with processes as others:
        for i, window in enumerate(windows):
            if i % k:
                others[i % k - 1].submit(window_rows, window, *shared, neighbour_params)
        for i, window in enumerate(windows):
            if i % k:
                got = others[i % k - 1].result()
            else:
                got = window_rows(window, *shared, neighbour_params)
            if got is None:
                continue
            rows, n_requests = got
            if len(rows):
                rows["request"] = rows["request"] + info["requests"]  # unique across windows
                frames.append(rows)
            info["windows"] += 1
            info["requests"] += n_requests
            if progress is not None:
                progress(f"window {info['windows']}/{len(windows)}: {n_requests} requests replayed")
    data = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    info["rows"] = len(data)
    if len(data):
        info["candidates_per_request"] = float(data.groupby("request").size().mean())
        info["positive_rate"] = float(data[label("positive")].mean())
    return data, info


def created_seconds(posts: pd.DataFrame) -> pd.Series:
    """post_id -> creation time (epoch seconds) of the live posts of a dim_posts frame."""
    from socialrec.stores.catalog import live_posts

    live = live_posts(posts).drop_duplicates("post_id", keep="last")
    return pd.Series(
        epoch_seconds(live["created_at"], dtype=np.float64),
        index=live["post_id"].to_numpy(dtype=np.int64),
    )


def _main(work: str, preload: Sequence[str]) -> None:
    """The other process of :class:`Elsewhere`: for every call number read from stdin,
    ``in-N.pkl`` -> ``fn(*args)`` -> ``out-N.pkl`` and "ok N" (or its traceback on stderr and
    "error N") on stdout; what the calls print goes to stderr."""
    answers = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    for module in preload:
        importlib.import_module(module)
    for line in sys.stdin:
        n = int(line)
        call = Path(work) / f"in-{n}.pkl"
        try:
            fn, args = pickle.loads(call.read_bytes())
            out = pickle.dumps(fn(*args), pickle.HIGHEST_PROTOCOL)
            (Path(work) / f"out-{n}.pkl").write_bytes(out)
            status = "ok"
        except Exception:  # noqa: BLE001 - reported to the caller, which raises it
            traceback.print_exc()
            sys.stderr.flush()
            status = "error"
        finally:
            call.unlink()
        answers.write(f"{status} {n}\n")
        answers.flush()


if __name__ == "__main__":
    from socialrec.quiet import quiet

    quiet()
    _main(sys.argv[1], sys.argv[2:])
