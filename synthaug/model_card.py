"""The trained model's card (``run/model/README.md``, the Hub's model-card format) and pushing the model to the Hub.

The card is written when training ends and rewritten after ``synthaug evaluate`` with the downstream figures
from ``metrics.json`` (as Hub ``model-index`` results, so they show on the model page). Text that came from the
data (class names, dataset sources) goes into YAML through ``huggingface_hub``'s serialiser and into the
Markdown body escaped, so a class called ``<script>`` or ``---`` cannot break either.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from synthaug import __version__
from synthaug.errors import SynthaugError

CARD_FILE = "README.md"


def _md(text: Any) -> str:
    """Text from the data, safe inside Markdown and the HTML the Hub renders it to."""
    return html.escape(str(text)).replace("|", "&#124;").replace("\n", " ")


def _eval_results(metrics: dict[str, Any], dataset_name: str) -> list:
    """``metrics.json`` as Hub evaluation results: each arm's macro-F1, the judge's accuracy, the CAS ratio."""
    from huggingface_hub import EvalResult

    def result(name: str, value: Any, kind: str = "f1") -> EvalResult | None:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return None
        return EvalResult(task_type="image-classification", dataset_type="synthaug/held-out",
                          dataset_name=dataset_name, metric_type=kind,
                          metric_name=name, metric_value=round(float(value), 4))

    out = [result(f"downstream macro-F1, {arm}", ((stats or {}).get("macro_f1") or {}).get("mean"))
           for arm, stats in (metrics.get("arms") or {}).items()]
    quality = metrics.get("quality") or {}
    out += [result("judge accuracy of the samples", quality.get("judge_accuracy"), "accuracy"),
            result("CAS ratio (synthetic-only / real)", quality.get("cas_ratio"), "cas_ratio")]
    return [r for r in out if r is not None]


def _lift_lines(metrics: dict[str, Any]) -> list[str]:
    """The verdicts of ``metrics.json``'s lift, one line each, with their 95% intervals."""
    lift = metrics.get("lift") or {}
    lines = []
    for arm, versus in (lift.get("paired") or {}).items():
        for against, label in (("vs_real", "real"), ("vs_best_baseline", lift.get("best_baseline") or "best baseline")):
            d = (versus or {}).get(against)
            if isinstance(d, dict) and isinstance(d.get("mean"), (int, float)) and len(d.get("ci") or []) == 2:
                low, high = d["ci"]
                lines.append(f"| {_md(arm)} | {_md(label)} | {d['mean']:+.3f} [{low:+.3f}, {high:+.3f}] | "
                             f"{_md(d.get('verdict', ''))} |")
    return lines


def model_card(meta: dict[str, Any], *, recipe=None, metrics: dict[str, Any] | None = None):
    """The card of a model described by ``meta`` (``synthaug.json``) → ``huggingface_hub.ModelCard``."""
    from huggingface_hub import ModelCard, ModelCardData

    classes = list(meta.get("classes", []))
    name = recipe.name if recipe is not None else "synthaug-model"
    source = recipe.data.source if recipe is not None else None
    base = meta.get("base")
    data = ModelCardData(
        library_name="diffusers",
        pipeline_tag="text-to-image" if meta.get("backbone") == "latent-text" else None,
        tags=["synthaug", "class-conditional", "synthetic-data", "diffusers:SynthaugPipeline",
              f"backbone:{meta.get('backbone', 'pixel')}"],
        base_model=base if isinstance(base, str) and "/" in base and not Path(base).exists() else None,
        model_name=name,
        eval_results=_eval_results(metrics, source or name) if metrics else None,
    )
    body = [
        f"# {_md(name)}",
        "",
        f"A class-conditional diffusion model trained by synthaug "
        f"{_md(meta.get('version', __version__))} to make synthetic training images for "
        f"{len(classes)} classes, {meta.get('image_size')} px, {meta.get('channels')} channel(s).",
        "",
        "```python",
        "from synthaug import SynthaugPipeline",
        'pipe = SynthaugPipeline.from_pretrained("path/to/model")',
        "images = pipe(class_labels=pipe.get_label_ids([...]), output_type=\"pil\").images",
        "```",
        "",
        "## Classes",
        "",
        ", ".join(_md(c) for c in classes),
        "",
        "## Training",
        "",
    ]
    if recipe is not None:
        t = recipe.train
        body += [f"- data: `{_md(source)}`, image size {recipe.data.image_size}, subset "
                 f"`{_md(json.dumps(recipe.data.subset.model_dump()))}`",
                 f"- {t.max_steps} steps at batch size {t.batch_size}, lr {t.lr:g}, seed {recipe.seed}"]
    if base:
        body.append(f"- fine-tuned from `{_md(base)}`")
    body.append("")
    if metrics:
        quality = metrics.get("quality") or {}
        body += ["## Does its synthetic data help? (held-out test split)", "",
                 "Paired macro-F1 differences over seeds, with 95% intervals (`report/metrics.json`).", "",
                 "| arm | against | difference [95% interval] | verdict |", "|---|---|---|---|",
                 *_lift_lines(metrics), ""]
        figures = [(k, quality.get(k)) for k in ("judge_accuracy", "memorization_rate", "cas_ratio")]
        body += [f"- {k.replace('_', ' ')}: {v:.3f}" for k, v in figures if isinstance(v, (int, float))] + [""]
    body += ["## Limitations", "",
             "Its images are synthetic. They were made to train classifiers on this data set and may copy "
             "training images (see the memorization rate); do not use them as real data or as evidence.", ""]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body))


def write_model_card(model_dir: Path, meta: dict[str, Any], *, recipe=None, metrics: dict[str, Any] | None = None) -> Path:
    """Write ``model_dir/README.md`` atomically."""
    from synthaug.io import atomic_write_text

    path = Path(model_dir) / CARD_FILE
    atomic_write_text(path, str(model_card(meta, recipe=recipe, metrics=metrics)))
    return path


def push_model_to_hub(model_dir: str | Path, repo_id: str, private: bool = True, token: str | None = None) -> str:
    """Upload a trained model folder (weights, ``model_index.json``, ``synthaug.json``, the card) to the Hub.

    A repository is private unless ``private=False``. Returns the commit's URL.
    """
    from huggingface_hub import HfApi, ModelCard

    from synthaug.diffusion import read_meta

    model_dir = Path(model_dir)
    read_meta(model_dir)  # refuses a folder that is not a synthaug model
    card = model_dir / CARD_FILE
    if not card.exists():
        raise SynthaugError(f"{card}: no model card; run synthaug train (or evaluate) to write it")
    try:
        ModelCard.load(card)
    except Exception as exc:  # a hand-edited card with a broken YAML header
        raise SynthaugError(f"{card}: the model card's YAML header is invalid ({exc}); fix or regenerate it") from None
    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    info = api.upload_folder(folder_path=str(model_dir), repo_id=repo_id, repo_type="model",
                             commit_message="Add a synthaug model")
    return str(getattr(info, "commit_url", info))
