"""LFW-style k-fold accuracy: the threshold chosen on the training folds, accuracy on the held-out one.

See :mod:`fetoolkit.metrics.verification` for the conventions; ``kfold_accuracy`` is re-exported there."""

from __future__ import annotations

import numpy as np

from fetoolkit.metrics._pairs import _check_folds, _int_dtype, _padcumsum, _prepare, _require_both, _Sorted
from fetoolkit.metrics.verification_types import KFoldAccuracy

# --------------------------------------------------------------------------------------------
# k-fold accuracy
# --------------------------------------------------------------------------------------------


def _kfold_core(p: _Sorted, f: np.ndarray, n_folds: int, w: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """LFW k-fold accuracy of each weighting of the pairs.

    Args:
        p: the sorted pairs.
        f: int ``[P]`` fold index 0..K-1 in ``p``'s order.
        n_folds: K.
        w: None (each pair once) or integer ``[B, P]`` bootstrap counts in ``p``'s order; a
            pair with count 0 is absent from that resample.

    Returns:
        ``(accuracies, thresholds)``: float64 ``[B, K]`` (``B = 1`` when ``w`` is None).

    Threshold choice for fold k (exact): the candidates are one threshold below the lowest
    training score, the midpoints between consecutive distinct training scores and one above
    the highest ("below"/"above" lie half the neighbouring gap away, or 0.5 when the training
    scores are all equal). Among the candidates with the highest training accuracy the median
    one is taken (the lower one of the two middle ones for an even count) -- the middle of the
    best plateau when the maxima are contiguous.

    How: a candidate is a boundary ``j`` (accept groups ``>= j``). Training correct =
    ``G_train + d_train(j)``, with ``d = impostors - genuine below j``, so the best candidate
    maximises ``d_train = d_all - d_fold``. ``d_fold`` only changes at the groups holding
    fold-k pairs, so it is constant on the runs of boundaries between them: one
    ``maximum.reduceat`` of ``d_all`` over those runs (plus the boundary right after each
    fold-k group, valid only when that group also holds training pairs) gives the maximum,
    and only the runs that reach it are scanned for the tied maximisers.
    """
    # Signed sums of the weights: a subject resample's weights (c_a * c_b) can sum past p.n.
    dt = _int_dtype(p.n if w is None else max(p.n, int(w.sum(axis=1).max())))
    sentinel = dt(-(2**30)) if dt is np.int32 else dt(-(2**62))
    starts = p.starts_ext
    m = p.m
    no_ties = m == p.n  # then starts == arange(P + 1) and the gathers below are identities
    if w is None:
        signed = np.where(p.y, -1, 1).astype(dt)[None]  # impostor +1, genuine -1
        tot_below = None
    else:
        signed = np.where(p.y, -w, w).astype(dt)
        tot_below = _padcumsum(w, dt)
        tot_below = tot_below if no_ties else tot_below[:, starts]
    d_all = _padcumsum(signed, dt)  # [B, M+1]
    d_all = d_all if no_ties else d_all[:, starts]
    b = d_all.shape[0]
    rows = np.arange(b)
    # masked[:, j] = d_all[:, j] where boundary j is a candidate ignoring fold membership
    # (j = 0, or group j-1 has weight), sentinel elsewhere; one sentinel column of padding.
    masked = np.empty((b, m + 2), dt)
    masked[:, : m + 1] = d_all
    masked[:, m + 1] = sentinel
    present_all = None
    if tot_below is not None:
        present_all = tot_below[:, 1:] > tot_below[:, :-1]  # [B, M]
        np.copyto(masked[:, 1 : m + 1], sentinel, where=~present_all)
    grp = np.repeat(np.arange(m, dtype=np.int64), np.diff(starts))  # pair -> group
    accs = np.empty((b, n_folds))
    thrs = np.empty((b, n_folds))
    for k in range(n_folds):
        pos = np.flatnonzero(f == k)
        gk = grp[pos]
        new = np.flatnonzero(gk[1:] != gk[:-1]) + 1
        first = np.concatenate([[0], new])  # into pos: first fold-k pair of each fold-k group
        stop = np.concatenate([new, [pos.size]])
        h = gk[first]  # [T] groups holding fold-k pairs, ascending
        sk = _padcumsum(signed[:, pos], dt)  # [B, n_k + 1]
        off = sk[:, stop]  # [B, T]: d_fold on the boundaries (h[t], h[t+1]]
        if w is None:
            trw = (starts[h + 1] - starts[h]) - (stop - first)
            sp_valid = np.broadcast_to(trw > 0, (b, h.size))
            tot_k = np.full(b, float(pos.size))
        else:
            tk = _padcumsum(w[:, pos], dt)
            trw = (tot_below[:, h + 1] - tot_below[:, h]) - (tk[:, stop] - tk[:, first])
            sp_valid = trw > 0
            tot_k = tk[:, -1].astype(np.float64)
        # Boundary h[t] + 1: a candidate iff group h[t] still has training weight.
        cand_sp = np.where(sp_valid, d_all[:, h + 1] - off, sentinel)
        # Runs [a, e) of boundaries whose candidacy does not depend on fold k.
        a = np.concatenate([[0], h + 2])
        e = np.concatenate([h + 1, [m + 1]])
        idx = np.empty(2 * a.size, np.int64)
        idx[0::2], idx[1::2] = a, e
        run_max = np.maximum.reduceat(masked, idx, axis=1)[:, 0::2]  # [B, T + 1]
        off_full = np.concatenate([np.zeros((b, 1), dt), off], axis=1)
        cand_run = np.where(a < e, run_max - off_full, sentinel)
        best = np.maximum(cand_run.max(axis=1), cand_sp.max(axis=1))
        jstar = _median_maximiser(masked, best, cand_sp, h, cand_run, a, e, off_full)
        thr = _chosen_thresholds(p.u, h, sp_valid, present_all, jstar)
        # Apply to fold k: correct = genuine >= thr + impostors < thr = G_k + sk[below].
        below = np.searchsorted(p.s[pos], thr, side="left")
        g_k = (tot_k - sk[:, -1]) / 2.0
        accs[:, k] = (g_k + sk[rows, below]) / tot_k
        thrs[:, k] = thr
    return accs, thrs


def _median_maximiser(
    masked: np.ndarray,
    best: np.ndarray,
    cand_sp: np.ndarray,
    h: np.ndarray,
    cand_run: np.ndarray,
    a: np.ndarray,
    e: np.ndarray,
    off_full: np.ndarray,
) -> np.ndarray:
    """The median (lower middle) of the boundaries reaching ``best``, per row: int64 ``[B]``."""
    b = masked.shape[0]
    r_sp, t_sp = np.nonzero(cand_sp == best[:, None])
    rows_l, js_l = [r_sp], [h[t_sp] + 1]
    r_run, t_run = np.nonzero(cand_run == best[:, None])
    if r_run.size:
        start, length = a[t_run], e[t_run] - a[t_run]
        target = best[r_run] + off_full[r_run, t_run]
        width = int(min(length.max(), 256))
        col = start[:, None] + np.arange(width)
        hit = masked[r_run[:, None], np.minimum(col, masked.shape[1] - 1)] == target[:, None]
        hit &= np.arange(width) < length[:, None]
        pr, pc = np.nonzero(hit)
        rows_l.append(r_run[pr])
        js_l.append(start[pr] + pc)
        for q in np.flatnonzero(length > width):  # long runs: the rest of the run
            lo, hi = start[q] + width, start[q] + length[q]
            more = np.flatnonzero(masked[r_run[q], lo:hi] == target[q]) + lo
            rows_l.append(np.full(more.size, r_run[q]))
            js_l.append(more)
    rows_all = np.concatenate(rows_l)
    js_all = np.concatenate(js_l)
    order = np.lexsort((js_all, rows_all))
    rows_all, js_all = rows_all[order], js_all[order]
    count = np.bincount(rows_all, minlength=b)
    first = np.concatenate([[0], np.cumsum(count)[:-1]])
    return js_all[first + (count - 1) // 2]


def _chosen_thresholds(
    u: np.ndarray, h: np.ndarray, sp_valid: np.ndarray, present_all: np.ndarray | None, jstar: np.ndarray
) -> np.ndarray:
    """Threshold of the chosen boundary of each row (see :func:`_kfold_core`).

    ``jstar = 0``: below the lowest training score; otherwise between group ``jstar - 1``
    (which holds training pairs) and the next group that does, or above it when none does.
    """
    b = jstar.shape[0]
    m = u.size

    def has_train(r: np.ndarray, g: np.ndarray) -> np.ndarray:
        t = np.minimum(np.searchsorted(h, g), h.size - 1)
        in_k = h[t] == g
        base = True if present_all is None else present_all[r, g]
        return np.where(in_k, sp_valid[r, t], base)

    thr = np.full(b, np.nan)
    g = jstar - 1
    inner = np.flatnonzero(jstar >= 1)
    if inner.size:
        look = g[inner, None] + 1 + np.arange(16)
        ok = look < m
        hit = has_train(inner[:, None], np.minimum(look, m - 1)) & ok
        found = hit.any(axis=1)
        q = look[np.arange(inner.size), np.argmax(hit, axis=1)]
        rf = inner[found]
        thr[rf] = 0.5 * (u[g[rf]] + u[q[found]])
    for row in np.flatnonzero(np.isnan(thr)):  # rare: accept-all, reject-all or a long gap
        pres = np.ones(m, bool) if present_all is None else present_all[row].copy()
        pres[h] = sp_valid[row]
        idx = np.flatnonzero(pres)
        if jstar[row] == 0:
            thr[row] = u[idx[0]] - (0.5 * (u[idx[1]] - u[idx[0]]) if idx.size > 1 else 0.5)
            continue
        gr = g[row]
        nxt = idx[idx > gr]
        if nxt.size:
            thr[row] = 0.5 * (u[gr] + u[nxt[0]])
        else:  # above the highest training score
            prv = idx[idx < gr]
            thr[row] = u[gr] + (0.5 * (u[gr] - u[prv[-1]]) if prv.size else 0.5)
    return thr


def _kfold_result(accs: np.ndarray, thrs: np.ndarray) -> KFoldAccuracy:
    a, t = accs[0], thrs[0]
    return KFoldAccuracy(
        accuracy_mean=float(a.mean()),
        accuracy_std=float(a.std()),
        fold_accuracies=tuple(float(x) for x in a),
        fold_thresholds=tuple(float(x) for x in t),
        best_threshold=float(t.mean()),
    )


def kfold_accuracy(scores: np.ndarray, labels: np.ndarray, folds: np.ndarray) -> KFoldAccuracy:
    """LFW-protocol k-fold verification accuracy.

    For each fold k the threshold that maximises accuracy on the pairs of all other folds is
    chosen exactly (candidates: one below the lowest training score, the midpoints between
    consecutive distinct training scores, one above the highest, the outer two half the
    neighbouring gap away; ties between candidates go to the median of the maximising
    candidates, the lower middle one for an even count) and applied to fold k (accept when
    ``score >= threshold``).

    Args:
        scores: float ``[P]``.
        labels: bool/int ``[P]``, 1 = genuine.
        folds: int ``[P]`` fold ids, consecutive integers, at least 2 folds.

    Returns:
        :class:`KFoldAccuracy`: folds in increasing id order; std with ``ddof=0``;
        ``best_threshold`` = mean of the fold thresholds.

    Raises:
        ValueError: invalid input, fewer than 2 folds, a fold with no pairs, or only one class
            present.
    """
    p = _prepare(scores, labels)
    _require_both(p.n_genuine, p.n_impostor, "kfold_accuracy")
    f, n_folds = _check_folds(folds, p.n)
    return _kfold_result(*_kfold_core(p, f[p.order], n_folds))
