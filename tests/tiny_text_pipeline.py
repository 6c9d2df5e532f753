"""A tiny text-to-image pipeline folder in the StableDiffusionPipeline layout, built here so no test needs the
network: a small ``UNet2DConditionModel`` (8×8 latents), an ``AutoencoderKL`` that maps 32 px images to them, a
``CLIPTextModel`` from a ``CLIPTextConfig`` and a ``CLIPTokenizer`` on a character-level BPE vocabulary written
here (as transformers' own CLIP tokenizer tests write theirs), and the PNDM scheduler Stable Diffusion ships with.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

# Characters the CLIP pre-tokenizer keeps as they are (printable ASCII, lower-cased): every word tokenizes
# to its letters, so the built-in digits' class names ("0" … "9") and the captions are all known tokens.
CHARACTERS = [chr(c) for c in range(33, 127) if not chr(c).isupper()]
# A few merges, so the vocabulary is a real BPE one: "photo" becomes one token.
MERGES = ["p h", "ph o", "pho t", "phot o</w>", "o f</w>"]
LATENT_CHANNELS = 4


def write_clip_vocabulary(folder: Path) -> Path:
    """``folder/vocab.json`` and ``folder/merges.txt``: the files a CLIP tokenizer is read from."""
    tokens = ["<|startoftext|>", "<|endoftext|>"]
    tokens += CHARACTERS + [f"{c}</w>" for c in CHARACTERS]
    tokens += ["".join(merge.split()) for merge in MERGES]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({token: i for i, token in enumerate(dict.fromkeys(tokens))}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(MERGES) + "\n")
    return folder


def build_tiny_pipeline(folder: Path, image_size: int = 32) -> Path:
    """Save a tiny ``StableDiffusionPipeline`` (safetensors) to ``folder`` and return it. Seeded: the same
    weights every call."""
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    tokenizer = CLIPTokenizer.from_pretrained(write_clip_vocabulary(Path(folder) / "tokenizer"), model_max_length=77)
    vocab = tokenizer.get_vocab()
    text_encoder = CLIPTextModel(CLIPTextConfig(
        hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, vocab_size=len(vocab),
        max_position_embeddings=77, bos_token_id=vocab["<|startoftext|>"], eos_token_id=vocab["<|endoftext|>"],
        pad_token_id=vocab["<|endoftext|>"]))
    # three VAE blocks halve twice: 32 px images ↔ 8×8 latents
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=LATENT_CHANNELS, block_out_channels=(8, 16, 16),
                        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
                        layers_per_block=1, norm_num_groups=8, sample_size=image_size)
    unet = UNet2DConditionModel(
        sample_size=image_size // 4, in_channels=LATENT_CHANNELS, out_channels=LATENT_CHANNELS, layers_per_block=1,
        block_out_channels=(16, 32), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32, attention_head_dim=4,
        norm_num_groups=8)
    scheduler = PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", skip_prk_steps=True,
                              steps_offset=1, set_alpha_to_one=False)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(folder, safe_serialization=True)
    return Path(folder)
