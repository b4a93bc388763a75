"""subind: `subind inspect PATH [--plot density.png]`, `subind ls`."""

from __future__ import annotations

from pathlib import Path

import click

from subind.conditions import CONDITIONS
from subind.subnetwork import Subnetwork


def plot_density(sub: Subnetwork, path: Path) -> None:
    """Horizontal bar chart of the kept fraction of each masked tensor."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from subind.io import write_with_atomic

    stats = sub.per_tensor()
    names = list(stats)
    fig, ax = plt.subplots(figsize=(7, 0.25 * len(names) + 1.2))
    ax.barh(range(len(names)), [100 * stats[n]["density"] for n in names], color="tab:blue")
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.invert_yaxis()
    ax.axvline(
        100 * sub.density, color="k", ls="--", lw=1, label=f"overall {100 * sub.density:.2f}%"
    )
    ax.set_xlabel("entries kept (%)")
    ax.legend(fontsize=8)
    ax.set_title(str(sub.meta.get("base_model", "subnetwork")), fontsize=8)
    fig.tight_layout()
    write_with_atomic(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)


@click.group()
def main() -> None:
    """Subtask Induction: inspect subnetworks, list conditions."""


@main.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--plot", type=click.Path(path_type=Path), default=None, help="write a PNG bar chart")
def inspect(path: Path, plot: Path | None) -> None:
    """Print a subnetwork's density per tensor and overall (PATH: its directory)."""
    try:
        sub = Subnetwork.load(path)
    except (FileNotFoundError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    width = max(len(n) for n in sub.masks) if sub.masks else 10
    for key in ("base_model", "subtask", "lambda", "beta_final", "epochs", "seed"):
        if key in sub.meta:
            click.echo(f"{key}: {sub.meta[key]}")
    for key in ("val_accuracy", "test_accuracy"):
        if sub.meta.get(key) is not None:
            click.echo(f"{key}: {sub.meta[key]:.4f}")
    click.echo(f"{'tensor':{width}s}  {'kept':>10s}  {'total':>10s}  density")
    for name, s in sub.per_tensor().items():
        click.echo(
            f"{name:{width}s}  {s['kept']:>10,d}  {s['total']:>10,d}  {100 * s['density']:6.2f}%"
        )
    click.echo(
        f"{'overall':{width}s}  {sub.kept:>10,d}  {sub.total:>10,d}  {100 * sub.density:6.2f}%"
    )
    if plot is not None:
        plot_density(sub, plot)
        click.echo(f"wrote {plot}")


@main.command("ls")
def ls_cmd() -> None:
    """List the transfer conditions."""
    for name in CONDITIONS:
        click.echo(f"{name:28s} {CONDITIONS.doc(name)}")


if __name__ == "__main__":
    main()
