"""synthaug: class-conditional diffusion for class-balanced synthetic image data.

>>> import synthaug
>>> recipe = synthaug.load_recipe("recipes/digits-longtail.yaml", overrides=["train.max_steps=500"])
>>> synthaug.run(recipe)                     # or synthaug.train / generate / evaluate
>>> gen = synthaug.Generator.from_pretrained("runs/digits-longtail/model")
>>> images = gen.sample(labels=[0, 0, 3], guidance=2.0, steps=20, seed=0)
"""

from __future__ import annotations

import os
from importlib import import_module
from typing import Any

__version__ = "0.1.0"

# (this process, the process that started it), noted before the heavy imports: a copy launched for another
# device (``workers.end_with_launcher``) ends if its launcher is gone, even if it died during the imports.
_PARENT_AT_IMPORT = (os.getpid(), os.getppid())

# Public names → the module that defines them; imported on first use so `import synthaug` stays fast.
_EXPORTS = {
    "load_recipe": "synthaug.config",
    "Recipe": "synthaug.config",
    "SynthaugError": "synthaug.errors",
    "Generator": "synthaug.sampling",
    "SynthaugPipeline": "synthaug.pipeline",
    "train": "synthaug.stages",
    "generate": "synthaug.stages",
    "evaluate": "synthaug.stages",
    "report": "synthaug.stages",
    "run": "synthaug.stages",
    "mix": "synthaug.mixing",
    "load_synthetic": "synthaug.mixing",
    "push_synthetic_to_hub": "synthaug.mixing",
    "push_model_to_hub": "synthaug.model_card",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'synthaug' has no attribute {name!r}")
