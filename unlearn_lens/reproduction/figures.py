"""The reproduction page's figures (PNG), drawn from cached cells."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from unlearn_lens.localize.summary import shallow_limit
from unlearn_lens.numbers import number
from unlearn_lens.predict.model import REVERSIBLE_RECOVERY
from unlearn_lens.report.figures import new_figure, save_figure
from unlearn_lens.reproduction.claims import depth_of, lower_cka, n_layers_of
from unlearn_lens.reproduction.fitting import PredictorFit, classified, forgotten, recovery
from unlearn_lens.reproduction.grid import CellResult, GridSettings


def figure_recovery(results: Sequence[CellResult], settings: GridSettings, path: Path) -> Path:
    columns = [(lr, protocol) for protocol in settings.protocols for lr in settings.lrs]
    figure, axes = new_figure(4.2 * len(settings.domains), 3.6, 1, len(settings.domains))
    for ax, domain in zip(axes, settings.domains, strict=True):
        grid = np.full((len(settings.methods), len(columns)), np.nan)
        for r in results:
            if (
                r.cell.domain == domain
                and r.recovery is not None
                and r.regime.reversible is not None
            ):
                grid[
                    settings.methods.index(r.cell.method),
                    columns.index((r.cell.lr, r.cell.protocol)),
                ] = r.recovery
        image = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis", aspect="auto")
        ax.set_xticks(
            range(len(columns)),
            [f"{lr:g} {p}" for lr, p in columns],
            fontsize="x-small",
            rotation=45,
            ha="right",
        )
        ax.set_yticks(range(len(settings.methods)), settings.methods, fontsize="small")
        ax.set_title(
            f"{domain}: relearning recovery (blank: not forgotten or inconclusive)",
            fontsize="small",
        )
    figure.colorbar(image, ax=axes, shrink=0.8, label="recovery")
    return save_figure(figure, path)


def figure_cka(results: Sequence[CellResult], settings: GridSettings, path: Path) -> Path:
    figure, (ax,) = new_figure(6.4, 4.2)
    colours = ["#2ca02c", "#ff7f0e", "#d62728", "#9467bd", "#8c564b"]
    for i, lr in enumerate(settings.lrs):
        for protocol, marker in (("single", "o"), ("continual", "^")):
            cells = [
                r for r in classified(results) if r.cell.lr == lr and r.cell.protocol == protocol
            ]
            ax.scatter(
                [lower_cka(r) for r in cells],
                [recovery(r) for r in cells],
                color=colours[i % len(colours)],
                marker=marker,
                s=18,
                label=f"lr {lr:g}, {protocol}",
            )
    ax.axhline(REVERSIBLE_RECOVERY, color="grey", linewidth=0.5)
    ax.set_xlabel("mean debiased CKA, lower half of the blocks (forget items)")
    ax.set_ylabel("relearning recovery")
    ax.set_title("Representation change vs recovery (classified cells)")
    ax.legend(fontsize="x-small")
    return save_figure(figure, path)


def figure_prediction(fit: PredictorFit, path: Path) -> Path:
    figure, axes = new_figure(9.6, 4.0, 1, 2)
    measured = [recovery(r) for r in fit.cells]
    for ax, held in zip(axes, fit.held_out, strict=True):
        ax.scatter(held.predictions, measured, s=14, color="#1f77b4")
        low = min(*measured, float(np.min(held.predictions)))
        high = max(*measured, float(np.max(held.predictions)))
        ax.plot([low, high], [low, high], color="grey", linewidth=0.5)
        ax.set_xlabel("predicted recovery (held out)")
        ax.set_ylabel("measured recovery")
        ax.set_title(f"{held.scheme}: Spearman {number(held.spearman, 2)}", fontsize="small")
    return save_figure(figure, path)


def figure_depth(results: Sequence[CellResult], path: Path) -> Path:
    done = forgotten(results)
    figure, (ax,) = new_figure(6.4, 3.6)
    n_layers = n_layers_of(done[0])
    depths = [d if (d := depth_of(r)) is not None else n_layers + 1 for r in done]
    ax.hist(depths, bins=np.arange(-0.5, n_layers + 2.5).tolist(), color="#1f77b4")
    ax.axvline(shallow_limit(n_layers) + 0.5, color="#d62728", linewidth=1, label="shallow limit")
    ax.set_xlabel(
        f"forgetting depth k (output head + last k of {n_layers} blocks reverted; 0 = head alone, "
        f"{n_layers + 1} = none suffices)",
        fontsize="small",
    )
    ax.set_ylabel("forgotten cells")
    ax.legend(fontsize="small")
    return save_figure(figure, path)
