"""Figures of the EDA notebook: counts, class balance, views, sizes, intensities, examples.

Each function takes the result of a computation (:func:`mura_lib.data.describe.count_table` or
a function of :mod:`mura_lib.reports.eda`) and returns a matplotlib Figure; none calls
``plt.show()``. Notebooks display the returned figure and save it with
:func:`mura_lib.reports.figures.save_figure`.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from mura_lib.config import SPLITS
from mura_lib.data.images import read_gray
from mura_lib.data.mura_layout import ordered_parts
from mura_lib.errors import ImageReadError

NORMAL_COLOR, ABNORMAL_COLOR = "C0", "C3"
SPLIT_COLORS = {"train": "C0", "valid": "C1"}


def plot_counts(counts: pd.DataFrame) -> Figure:
    """Studies per body part, normal and abnormal stacked, one panel per split.

    Args:
        counts: :func:`mura_lib.data.describe.count_table` of the frame. Each bar is labelled
            with its image count, since a study holds several images.
    """
    splits = [s for s in SPLITS if s in counts.index.get_level_values("split")]
    fig, axes = plt.subplots(1, len(splits), figsize=(6.0 * len(splits), 4.0), squeeze=False)
    for ax, split in zip(axes[0], splits, strict=True):
        table = counts.loc[split].drop(index="total")  # the part rows
        x = np.arange(len(table))
        ax.bar(x, table["n_normal"], color=NORMAL_COLOR, label="normal")
        top = ax.bar(
            x, table["n_abnormal"], bottom=table["n_normal"], color=ABNORMAL_COLOR, label="abnormal"
        )
        images = [f"{n} img" for n in table["n_images"]]
        ax.bar_label(top, labels=images, fontsize="x-small", padding=2)
        total = counts.loc[(split, "total")]
        n_studies, n_images = int(total["n_studies"]), int(total["n_images"])
        ax.set_title(f"{split}: {n_studies} studies, {n_images} images")
        ax.set_xticks(x, table.index, rotation=45, ha="right")
        ax.set_ylabel("studies")
        ax.margins(y=0.12)
        ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def plot_abnormal_rate(counts: pd.DataFrame) -> Figure:
    """Share of abnormal studies per body part, train and valid side by side.

    The dashed lines are each split's overall rate; the dotted line is balance (0.5).
    """
    rates = counts["abnormal_rate"].unstack("split")  # a column per split, as in SPLITS
    parts = [p for p in ordered_parts(rates.index) if p != "total"]
    colors = [SPLIT_COLORS.get(split) for split in rates.columns]
    fig, ax = plt.subplots(figsize=(7.0, 4.0))
    rates.loc[parts].plot.barh(ax=ax, width=0.8, color=colors)
    for split, color in zip(rates.columns, colors, strict=True):
        overall = rates.loc["total", split]
        ax.axvline(overall, ls="--", lw=1, color=color, label=f"{split} overall {overall:.0%}")
    ax.axvline(0.5, ls=":", lw=1, color="grey")
    ax.invert_yaxis()
    ax.set(
        xlim=(0, 1),
        xlabel="abnormal share of studies",
        ylabel="",
        title="Class balance per body part",
    )
    ax.legend(fontsize="small", loc="lower right")
    fig.tight_layout()
    return fig


def plot_views_per_study(views: pd.DataFrame) -> Figure:
    """Heatmap of :func:`mura_lib.reports.eda.views_per_study`: colour = share of the row's studies,
    text = number of studies."""
    import seaborn as sns

    shares = views.div(views.sum(axis=1).replace(0, 1), axis=0)
    annot = views.astype(str).where(views > 0, "")
    fig, ax = plt.subplots(figsize=(1.0 + 0.7 * views.shape[1], 0.5 + 0.45 * len(views)))
    sns.heatmap(
        shares,
        annot=annot,
        fmt="",
        cmap="Blues",
        vmin=0,
        vmax=max(float(shares.to_numpy().max()), 0.01),  # pale cells read badly
        cbar_kws={"label": "share of the part's studies"},
        linewidths=0.5,
        ax=ax,
    )
    ax.axhline(len(views) - 1, color="black", lw=1.5)  # the "all" row below
    ax.set(xlabel="views (images) in the study", ylabel="", title="Views per study")
    fig.tight_layout()
    return fig


def plot_sizes(sizes: pd.DataFrame, hexbin_above: int = 3000) -> Figure:
    """Width against height of every image (left) and the histogram of aspect ratios (right).

    Args:
        sizes: :func:`mura_lib.reports.eda.image_sizes`; unreadable headers are left out.
        hexbin_above: above this many images the scatter becomes a hexbin (log counts), which
            stays readable for 40k points.
    """
    ok = sizes[sizes["error"] == ""]
    parts = ordered_parts(ok["body_part"])
    fig, (left, right) = plt.subplots(1, 2, figsize=(12.0, 5.0))
    if len(ok) > hexbin_above:
        art = left.hexbin(
            ok["width"], ok["height"], gridsize=60, bins="log", cmap="viridis", mincnt=1
        )
        fig.colorbar(art, ax=left, label="images (log)")
    else:
        for i, part in enumerate(parts):
            rows = ok[ok["body_part"] == part]
            left.scatter(rows["width"], rows["height"], s=8, alpha=0.6, color=f"C{i}", label=part)
        left.legend(fontsize="x-small", markerscale=2)
    top = float(max(ok["width"].max(), ok["height"].max(), 1)) if len(ok) else 1.0
    left.plot([0, top], [0, top], ls=":", color="grey", lw=1)
    left.set(
        xlabel="width (px)",
        ylabel="height (px)",
        xlim=(0, top * 1.05),
        ylim=(0, top * 1.05),
        title=f"Image sizes ({len(ok)} images; dotted: square)",
    )
    left.set_aspect("equal")
    aspects = [np.log2(ok.loc[ok["body_part"] == p, "aspect"].to_numpy()) for p in parts]
    lo = min((a.min() for a in aspects if a.size), default=-1.0)
    hi = max((a.max() for a in aspects if a.size), default=1.0)
    bins = np.linspace(min(lo, -0.1), max(hi, 0.1), 40)
    right.hist(
        aspects, bins=bins, stacked=True, label=parts, color=[f"C{i}" for i in range(len(parts))]
    )
    right.axvline(0, ls=":", color="grey", lw=1)
    ticks = [
        t
        for t in (1 / 4, 1 / 3, 1 / 2, 2 / 3, 1, 3 / 2, 2, 3, 4)
        if bins[0] <= np.log2(t) <= bins[-1]
    ]
    right.set_xticks(np.log2(ticks), [f"{t:.2g}" for t in ticks])
    right.set(
        xlabel="aspect ratio width / height (log scale; < 1 portrait)",
        ylabel="images",
        title="Aspect ratios",
    )
    right.legend(fontsize="x-small")
    fig.tight_layout()
    return fig


def plot_intensity_histograms(histograms: pd.DataFrame, note: str = "") -> Figure:
    """Gray-level histograms (share of pixels, log scale), one line per column.

    Args:
        histograms: ``IntensitySample.histograms`` of
            :func:`mura_lib.reports.eda.intensity_histograms`.
        note: printed under the title (e.g. ``IntensitySample.note``), wrapped.
    """
    import textwrap

    fig, ax = plt.subplots(figsize=(9.0, 4.5))
    for i, column in enumerate(histograms.columns):
        ax.plot(
            histograms.index,
            histograms[column].where(histograms[column] > 0),
            lw=1.2,
            color=f"C{i}",
            label=str(column),
        )
    ax.set_yscale("log")
    ax.set(xlim=(0, 255), xlabel="gray level (8-bit)", ylabel="share of pixels (log)")
    ax.set_title(
        "Gray-level histograms" + ("\n" + textwrap.fill(note, 110) if note else ""),
        fontsize="medium",
    )
    ax.legend(fontsize="small", ncol=2)
    fig.tight_layout()
    return fig


def plot_part_cooccurrence(matrix: pd.DataFrame) -> Figure:
    """Heatmap of :func:`mura_lib.reports.eda.part_cooccurrence`: patients seen under both parts.

    The diagonal (all of a part's patients) is left blank so the colours show the overlaps;
    its counts go into the row labels.
    """
    import seaborn as sns

    fig, ax = plt.subplots(figsize=(7.5, 5.5))
    diagonal = np.eye(len(matrix), dtype=bool)
    sns.heatmap(
        matrix.astype(float),
        mask=diagonal,
        annot=True,
        fmt=".0f",
        cmap="Oranges",
        cbar_kws={"label": "patients under both parts"},
        linewidths=0.5,
        ax=ax,
    )
    totals = [f"{part} ({matrix.loc[part, part]} patients)" for part in matrix.index]
    ax.set_yticks(np.arange(len(matrix)) + 0.5, totals, rotation=0)
    ax.set(xlabel="", ylabel="", title="Patients seen under two body parts")
    fig.tight_layout()
    return fig


def plot_study_grid(
    frame: pd.DataFrame, studies: pd.DataFrame, max_views: int = 4, cell: float = 2.2
) -> Figure:
    """The views of some studies: one row per study, one column per view (up to `max_views`).

    Args:
        frame: the image index frame (gives each study's image paths).
        studies: the studies to show, one per row (e.g.
            :func:`mura_lib.reports.eda.example_studies`); needs study_id and label.
        max_views: columns; views beyond are counted in the row's title.
        cell: inches per image cell. Images keep their aspect ratio (no stretching).
    """
    n_rows = max(len(studies), 1)
    band = 0.3  # inches above each row for its title
    height = (cell + band) * n_rows
    # A fixed grid, no layout engine: constrained layout takes seconds on 50+ image axes.
    fig = plt.figure(figsize=(cell * max_views, height))
    grid = fig.add_gridspec(
        n_rows,
        max_views,
        left=0.005,
        right=0.995,
        bottom=0.002,
        top=1 - band / height,
        hspace=band / cell,
        wspace=0.04,
    )
    rows = frame[frame["study_id"].isin(studies["study_id"])]  # not 14k groups on MURA
    by_study = dict(tuple(rows.groupby("study_id", sort=False)))
    for r, study in enumerate(studies.itertuples()):
        views = by_study[study.study_id].sort_values("view")
        label = "abnormal" if study.label == 1 else "normal"
        shown = (
            f"views 1-{min(len(views), max_views)} of {len(views)}" if len(views) > 1 else "1 view"
        )
        top_left = grid[r, 0].get_position(fig)
        fig.text(
            top_left.x0,
            top_left.y1 + 0.05 / height,
            f"{study.study_id}: {label} ({shown})",
            fontsize="small",
            va="bottom",
            color=ABNORMAL_COLOR if study.label == 1 else "black",
        )
        for c, path in enumerate(views["path"].iloc[:max_views]):
            ax = fig.add_subplot(grid[r, c])
            ax.set_axis_off()
            try:
                gray, _ = read_gray(path)
                ax.imshow(gray, cmap="gray", vmin=0, vmax=255)
            except ImageReadError:
                ax.text(0.5, 0.5, "unreadable", ha="center", va="center", transform=ax.transAxes)
    return fig
