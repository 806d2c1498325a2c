"""The built-in model, ``craft-tiny``: a 3.4M-parameter CLIP shipped in ``benchmark/model/assets``.

It was trained on held-out scikit-learn digits by ``scripts/train_builtin_model.py`` (see
``assets/craft-tiny.md``), so that ``craft demo`` and the tests need no download.
"""

from __future__ import annotations

from pathlib import Path

BUILTIN_BACKBONE = "craft-tiny"
ASSETS_DIR = Path(__file__).resolve().parent / "assets"


def builtin_model_paths() -> tuple[Path, Path]:
    """Paths of the shipped ``craft-tiny`` open_clip config (json) and weights (fp16 safetensors)."""
    return ASSETS_DIR / f"{BUILTIN_BACKBONE}.json", ASSETS_DIR / f"{BUILTIN_BACKBONE}.safetensors"


def register_builtin_model() -> None:
    """Make ``craft-tiny`` known to open_clip (config and tokenizer); safe to call repeatedly."""
    import open_clip

    if BUILTIN_BACKBONE not in open_clip.list_models():
        open_clip.add_model_config(builtin_model_paths()[0])
