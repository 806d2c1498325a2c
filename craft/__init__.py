"""The methods, on the user's side of the black box: CraFT, CBBT, BBT, zero-shot CLIP and CoOp's
config, written against :class:`craft.blackbox.BlackBox` (logits out, queries counted).

Imports torch, numpy and pycma only: never open_clip, Ray, ``benchmark`` or ``measurement``.
"""
