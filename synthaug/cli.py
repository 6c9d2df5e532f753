"""The ``synthaug`` command: a thin click layer over ``synthaug.stages``.

Exit codes: 0 success, 2 bad input (one line on stderr, no traceback), 1 an unexpected or environment
failure. ``SYNTHAUG_DEBUG=1`` shows the traceback of an unexpected failure.
"""

from __future__ import annotations

import errno
import functools
import os
import signal
import sys
from pathlib import Path

import click

from synthaug.errors import Interrupted, SynthaugError

INTERRUPTED = "synthaug: interrupted; finished work is kept, rerun with --resume to continue"
# OS errors that mean the machine, not synthaug, failed: a write deep inside a library (a Lightning
# checkpoint) that synthaug.io did not wrap still gets the environment-failure line and exit code.
ENVIRONMENT_ERRNOS = (errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM)


def _term_as_interrupt(signum, frame):
    # SIGTERM (a scheduler stopping the job) takes the same graceful road as Ctrl-C.
    raise KeyboardInterrupt


def _say(message: str) -> None:
    """Print the one line, on a line of its own: a failure can leave a progress bar open mid-line."""
    std = sys.modules.get("tqdm.std")
    for bar in list(getattr(getattr(std, "tqdm", None), "_instances", ())):
        bar.close()
    click.echo(message, err=True)


class _Group(click.Group):
    def invoke(self, ctx):
        previous = signal.signal(signal.SIGTERM, _term_as_interrupt)
        try:
            return super().invoke(ctx)
        except SynthaugError as exc:
            _say(f"synthaug: error: {exc}")
            ctx.exit(exc.exit_code)
        except Interrupted as exc:
            _say(f"synthaug: interrupted: {exc}")
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            _say(INTERRUPTED)
            ctx.exit(130)
        except SystemExit as exc:
            # Lightning answers Ctrl-C inside a fit with sys.exit(1) (evaluate's classifiers); still an interrupt.
            if isinstance(exc.__context__, KeyboardInterrupt):
                _say(INTERRUPTED)
                ctx.exit(130)
            raise
        except click.UsageError as exc:  # click's own four-line form, as the one line the contract promises
            where = exc.ctx.command_path if exc.ctx is not None else "synthaug"
            _say(f"synthaug: error: {exc.format_message()} (see {where} --help)")
            ctx.exit(exc.exit_code)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as exc:  # the last line of defence: one line, not a traceback
            if os.environ.get("SYNTHAUG_DEBUG"):
                raise
            if isinstance(exc, OSError) and exc.errno in ENVIRONMENT_ERRNOS:
                from synthaug.io import environment_error

                failure = environment_error(Path(exc.filename2 or exc.filename or "(unnamed file)"), exc)
                _say(f"synthaug: error: {failure}")
                ctx.exit(failure.exit_code)
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            _say(f"synthaug: unexpected error: {exc.__class__.__name__}: {first} "
                 "(rerun with SYNTHAUG_DEBUG=1 for the traceback)")
            ctx.exit(1)
        finally:
            signal.signal(signal.SIGTERM, previous)


def _shard(value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    try:
        i, n = (int(p) for p in value.split("/"))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not i/n, e.g. 0/4") from None
    if not (n >= 1 and 0 <= i < n):
        raise click.BadParameter(f"{value!r}: need 0 ≤ i < n")
    return i, n


def _recipe_command(fn):
    """A command on RECIPE_OR_RUN_DIR with the options every command takes; it calls
    ``fn(recipe, resume=, overwrite=, **its own options)`` with the loaded recipe (not at all for --dry-run)."""

    @functools.wraps(fn)  # keeps fn's name, help text and its own click options
    def command(recipe_or_run_dir, overrides, out, overwrite, resume, dry_run, verbose, **options):
        from synthaug import console

        console.configure(verbose)
        recipe = _load(recipe_or_run_dir, overrides, out, resume, overwrite, dry_run)
        return fn(recipe, resume=resume, overwrite=overwrite, **options)

    command = click.option("-v", "--verbose", is_flag=True,
                           help="Also show the libraries' own output: Lightning's banners and model summaries, "
                                "deprecation warnings.")(command)
    command = click.option("--dry-run", is_flag=True, help="Print the resolved recipe and stop.")(command)
    command = click.option("--resume", is_flag=True, help="Finish what an interrupted command started.")(command)
    command = click.option("--overwrite", is_flag=True, help="Replace existing outputs.")(command)
    command = click.option("--out", type=click.Path(file_okay=False), default=None,
                           help="Run directory (default: the recipe's output_dir).")(command)
    command = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                           help="Override a recipe key with a YAML value, e.g. --set train.max_steps=500.")(command)
    return click.argument("recipe_or_run_dir", type=click.Path(path_type=Path))(command)


def _load(recipe_or_run_dir: Path, overrides, out, resume: bool, overwrite: bool, dry_run: bool):
    import yaml

    from synthaug.config import load_recipe

    if resume and overwrite:
        raise SynthaugError("--resume and --overwrite contradict each other; choose one")
    if out is not None and not str(out).strip():
        # An empty --out would fall back to the recipe's output_dir: another folder than the one asked for.
        raise SynthaugError(f"--out {str(out)!r} is empty; give a run directory, e.g. --out runs/my-run")
    recipe = load_recipe(recipe_or_run_dir, overrides, out=out)
    if dry_run:
        click.echo(yaml.safe_dump(recipe.to_dict(), sort_keys=False), nl=False)
        click.echo(f"# run directory: {recipe.run_dir}")
        sys.exit(0)
    return recipe


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(package_name="synthaug")
def cli():
    """Train a class-conditional diffusion model on a small labelled image dataset, generate class-balanced
    synthetic images, and measure whether they help a classifier."""


@cli.command()
@_recipe_command
def data(recipe, resume, overwrite):
    """Show the data a recipe would train on: classes, counts, image modes and sizes, problems."""
    from synthaug.stages import describe_data

    info = describe_data(recipe)
    width = max(len("class"), *(len(c) for c in info["classes"]))
    click.echo(f"source: {recipe.data.source}  ({len(info['classes'])} classes, "
               f"{recipe.data.image_size}px, {recipe.data.channels} channel(s))")
    click.echo(f"{'class':<{width}}  {'train':>6}  {'test':>6}")
    for c in info["classes"]:
        click.echo(f"{c:<{width}}  {info['train_counts'][c]:>6}  {info['test_counts'][c]:>6}")
    click.echo(f"{'total':<{width}}  {sum(info['train_counts'].values()):>6}  {sum(info['test_counts'].values()):>6}")
    click.echo(f"modes: {info['modes']}   sizes: {info['sizes']}")
    for problem in info["problems"]:
        click.echo(f"warning: {problem}")


@cli.command()
@_recipe_command
def train(recipe, resume, overwrite):
    """Train (or fine-tune) the diffusion model → RUN_DIR/model."""
    from synthaug import stages

    click.echo(f"model: {stages.train(recipe, resume=resume, overwrite=overwrite)}")


@cli.command()
@_recipe_command
@click.option("--shard", default=None, metavar="I/N", help="Run only plan rows with position % N == I (job arrays).")
def generate(recipe, resume, overwrite, shard):
    """Sample class-balanced synthetic images → RUN_DIR/synthetic."""
    from synthaug import stages
    from synthaug.runs import RunDir

    dataset = stages.generate(recipe, resume=resume or shard is not None, overwrite=overwrite, shard=_shard(shard))
    if dataset is not None:
        click.echo(f"synthetic dataset: {RunDir(recipe.run_dir).synthetic} ({len(dataset)} images)")


@cli.command()
@_recipe_command
def evaluate(recipe, resume, overwrite):
    """Train downstream classifiers on every arm and compare them on the held-out test split."""
    from synthaug import stages

    _headline(stages.evaluate(recipe, resume=resume, overwrite=overwrite))


@cli.command()
@_recipe_command
def report(recipe, resume, overwrite):
    """Rebuild RUN_DIR/report/index.html from metrics.json."""
    from synthaug import stages

    click.echo(f"report: {stages.report(recipe)}")


@cli.command()
@_recipe_command
def run(recipe, resume, overwrite):
    """train → generate → evaluate → report, skipping stages whose outputs are complete (with --resume)."""
    from synthaug import stages

    _headline(stages.run(recipe, resume=resume, overwrite=overwrite))


@cli.command()
def schema():
    """Print the recipe's JSON Schema: `synthaug schema > recipe.schema.json`, then point the editor at it
    (`# yaml-language-server: $schema=recipe.schema.json` as a recipe's first line) for completion and checks."""
    import json

    from synthaug.config import recipe_schema

    click.echo(json.dumps(recipe_schema(), indent=2))


def _headline(report_dir: Path) -> None:
    import json

    from synthaug.runs import RunDir

    run = RunDir(report_dir.parent)
    metrics = json.loads(run.metrics.read_text())
    arms, lift = metrics.get("arms", {}), metrics.get("lift", {})

    def f1(arm):
        return arms.get(arm, {}).get("macro_f1", {}).get("mean")

    def versus(arm, against, mean):
        """``+0.003 [-0.010, +0.016] 95% CI: no clear difference``, or the bare difference without an interval."""
        cell = ((lift.get("paired") or {}).get(arm) or {}).get(against)
        if not cell:
            return f"{mean:+.3f}"
        low, high = cell["ci"]
        return f"{cell['mean']:+.3f} [{low:+.3f}, {high:+.3f}] 95% CI: {cell['verdict']}"

    click.echo(f"synthetic dataset: {run.synthetic}")
    click.echo(f"report: {report_dir / 'index.html'}")
    if f1("real") is not None and f1("real+synthetic") is not None:
        click.echo(f"macro-F1: real {f1('real'):.3f} → real+synthetic {f1('real+synthetic'):.3f}, "
                   f"{versus('real+synthetic', 'vs_real', lift.get('macro_f1', 0))}")
    if lift.get("vs_best_baseline_macro_f1") is not None:
        best = lift["best_synthetic_arm"]
        click.echo(f"best synthetic arm {best} vs best baseline {lift['best_baseline']}: macro-F1 "
                   f"{versus(best, 'vs_best_baseline', lift['vs_best_baseline_macro_f1'])}")


def main() -> None:
    cli(prog_name="synthaug")


if __name__ == "__main__":
    main()
