"""Evaluation figures written as PNGs: confusion matrix, valence/arousal truth-vs-prediction, per-AU F1.

Figures are drawn on `matplotlib.figure.Figure` objects (Agg canvas), never through pyplot, so plotting changes
no global state and needs no display.
"""
from __future__ import annotations

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from fbnet_tf.labels import AU_NAMES, EXPRESSIONS, VA_NAMES


def _save(figure: Figure, path) -> str:
    FigureCanvasAgg(figure)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return str(path)


def plot_confusion_matrix(matrix, path, title: str = "", labels=EXPRESSIONS) -> str:
    """Row-normalised confusion matrix (rows = truth, columns = prediction) labelled with `labels`."""
    matrix = np.asarray(matrix, np.float64)
    rows = matrix.sum(axis=1, keepdims=True)
    normalised = np.divide(matrix, rows, out=np.zeros_like(matrix), where=rows > 0)
    side = 4.0 + 0.35 * len(labels)
    figure = Figure(figsize=(side + 1.0, side))
    axes = figure.add_subplot()
    image = axes.imshow(normalised, vmin=0.0, vmax=1.0, cmap="Blues")
    figure.colorbar(image, ax=axes, fraction=0.046)
    ticks = np.arange(len(labels))
    axes.set_xticks(ticks, labels, rotation=45, ha="right")
    axes.set_yticks(ticks, labels)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    for (i, j), value in np.ndenumerate(normalised):
        axes.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=8,
                  color="white" if value > 0.5 else "black")
    axes.set_title(title)
    return _save(figure, path)


def plot_va_histogram(va_true, va_pred, path, title: str = "") -> str:
    """2-D histograms (log counts) of truth vs prediction, one panel each for valence and arousal, with the diagonal."""
    va_true, va_pred = np.asarray(va_true).reshape(-1, 2), np.asarray(va_pred).reshape(-1, 2)
    figure = Figure(figsize=(10, 4.5))
    for column, name in enumerate(VA_NAMES):
        axes = figure.add_subplot(1, 2, column + 1)
        counts, _, _, image = axes.hist2d(va_true[:, column], va_pred[:, column], bins=40,
                                          range=[[-1, 1], [-1, 1]], cmap="viridis", norm=LogNorm())
        figure.colorbar(image, ax=axes, fraction=0.046)
        axes.plot([-1, 1], [-1, 1], color="white", linewidth=0.8, linestyle="--")
        axes.set_xlabel(f"true {name}")
        axes.set_ylabel(f"predicted {name}")
        axes.set_aspect("equal")
    figure.suptitle(title)
    return _save(figure, path)


def plot_au_f1(f1_per_au, annotated, path, title: str = "", au_names=AU_NAMES) -> str:
    """Bars of F1 for each annotated AU (the database's own AU set), with the mean as a line."""
    f1_per_au, annotated = np.asarray(f1_per_au, np.float64), np.asarray(annotated, bool)
    names = [name for name, used in zip(au_names, annotated) if used]
    values = f1_per_au[annotated]
    figure = Figure(figsize=(max(4.0, 0.5 * len(names) + 1.5), 4))
    axes = figure.add_subplot()
    axes.bar(names, values, color="tab:blue")
    if values.size:
        axes.axhline(values.mean(), color="tab:red", linestyle="--", label=f"mean {values.mean():.2f}")
        axes.legend(loc="upper right")
    axes.set_ylim(0, 1)
    axes.set_ylabel("F1")
    axes.tick_params(axis="x", rotation=45)
    axes.set_title(title)
    return _save(figure, path)


def plot_va_comparison(rows: dict, path, title: str = "") -> str:
    """The FATAUVA-Net paper's Figures 9-10 side by side: MSE and CCC of valence and arousal per model.

    `rows`: {model name: {"mse_valence", "mse_arousal", "ccc_valence", "ccc_arousal"}}."""
    names = list(rows)
    figure = Figure(figsize=(max(6.0, 1.6 * len(names) + 3), 3.8))
    x = np.arange(len(names))
    for k, (metric, label) in enumerate((("mse", "MSE (lower is better)"), ("ccc", "CCC (higher is better)"))):
        axes = figure.add_subplot(1, 2, k + 1)
        for d, (dimension, colour) in enumerate(zip(VA_NAMES, ("tab:blue", "tab:orange"))):
            values = [rows[n][f"{metric}_{dimension}"] for n in names]
            bars = axes.bar(x + (d - 0.5) * 0.38, values, 0.38, color=colour, label=dimension)
            axes.bar_label(bars, fmt="%.2f", fontsize=7)
        axes.set_xticks(x, names, rotation=15)
        axes.set_title(label)
        axes.legend(fontsize=8)
    figure.suptitle(title)
    return _save(figure, path)
