"""Train a tiny ViT with the Hugging Face ``Trainer`` on ``mix()`` of real + synthetic images.

    python examples/hf_trainer.py --run runs/digits-longtail --steps 500

The model is built from a config (no download). ``compute_loss`` multiplies each sample's loss by the
``weight`` column of ``mix()``: 1 for real images, ``--weight`` for synthetic ones.
"""

import argparse
import tempfile
from pathlib import Path

import datasets
import numpy as np
import torch
import torch.nn.functional as F
from transformers import Trainer, TrainingArguments, ViTConfig, ViTForImageClassification

from synthaug import mix
from synthaug.config import load_recipe
from synthaug.data import load_real_data
from synthaug.images import convert_mode, resize_crop


class WeightedTrainer(Trainer):
    def compute_loss(self, model, inputs, return_outputs=False, **kwargs):
        weight = inputs.pop("weight")
        outputs = model(pixel_values=inputs["pixel_values"])
        loss = (F.cross_entropy(outputs.logits, inputs["labels"], reduction="none") * weight).mean()
        return (loss, outputs) if return_outputs else loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a synthaug run directory")
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--weight", type=float, default=0.5, help="loss weight of a synthetic sample")
    args = parser.parse_args()

    recipe = load_recipe(args.run)
    size, channels = recipe.data.image_size, recipe.data.channels
    real = load_real_data(recipe.data, recipe.seed)

    def to_inputs(batch):  # PIL images → pixel_values in [−1, 1], (B, C, H, W)
        arrays = [np.array(resize_crop(convert_mode(img, channels), size), np.float32).reshape(size, size, channels)
                  for img in batch["image"]]
        pixels = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2) / 127.5 - 1.0
        weight = batch.get("weight", [1.0] * len(arrays))
        return {"pixel_values": pixels, "labels": torch.tensor(batch["label"]), "weight": torch.tensor(weight)}

    train = mix(real.train, args.run / "synthetic", weight=args.weight).with_transform(to_inputs)
    test = real.test.cast_column("image", datasets.Image()).with_transform(to_inputs)  # decoded to PIL
    classes = real.classes
    config = ViTConfig(image_size=size, patch_size=max(1, size // 4), num_channels=channels, hidden_size=32,
                       num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, num_labels=len(classes),
                       id2label=dict(enumerate(classes)), label2id={c: i for i, c in enumerate(classes)})
    with tempfile.TemporaryDirectory() as out:
        training = TrainingArguments(output_dir=out, max_steps=args.steps, per_device_train_batch_size=64,
                                     learning_rate=1e-3, seed=recipe.seed, report_to="none", save_strategy="no",
                                     logging_steps=100, remove_unused_columns=False, disable_tqdm=True)
        trainer = WeightedTrainer(model=ViTForImageClassification(config), args=training, train_dataset=train)
        trainer.train()
        predictions = trainer.predict(test)
    accuracy = float((predictions.predictions.argmax(-1) == predictions.label_ids).mean())
    print(f"real test accuracy after {args.steps} steps: {accuracy:.3f}")


if __name__ == "__main__":
    main()
