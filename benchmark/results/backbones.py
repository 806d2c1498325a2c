"""Backbone names: as open_clip spells them, and the one id that results are compared by.

A config may name a backbone as the paper does (``ViT-B/32``) or as open_clip does
(``ViT-B-32``); the sweep and search configs keep open_clip's spelling (:func:`open_clip_name`),
the name the model is loaded by and a cell's id holds. ``RN50-quickgelu`` is open_clip's name for
OpenAI's RN50 with its QuickGELU activation (what the ``openai`` weights are): the same backbone
as the paper's ``RN50``, so reports compare rows by :func:`backbone_id`, under which both meet.
"""

from __future__ import annotations

QUICKGELU = "-quickgelu"


def open_clip_name(name: str) -> str:
    """The paper's spelling (``ViT-B/32``) as open_clip spells it (``ViT-B-32``); other names as given."""
    return name.replace("/", "-")


def backbone_id(name: str) -> str:
    """The id a results row's backbone is compared by, in tables and against the paper:
    open_clip's spelling without the ``-quickgelu`` variant suffix (``RN50-quickgelu`` -> ``RN50``)."""
    return open_clip_name(name).removesuffix(QUICKGELU)
