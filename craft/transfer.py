"""Host-device copies that do not stall a run's loop on a GPU.

A plain ``tensor.to("cuda")`` from pageable host memory, ``.item()`` or ``.tolist()`` of a GPU
tensor waits until the GPU has finished everything queued before it: every run interleaved on
that GPU (:mod:`craft.interleave`), not only the caller. The loops of CraFT and BBT therefore
move host data in with :func:`to_device` (pinned, asynchronous) and read results back with
:class:`HostCopy`, which waits only for the work queued before the copy. On a CPU both are
plain tensors.
"""

from __future__ import annotations

import torch

from craft.waits import blocked


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``t`` on ``device``; from the host to a GPU through pinned memory, without waiting for the GPU."""
    if device.type != "cuda" or t.device.type != "cpu":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


class HostCopy:
    """A copy of a (small) tensor on its way to the host; :meth:`get` waits for it alone.

    On a GPU the copy is queued behind the work that computes ``t`` and an event marks its end;
    work queued afterwards (another run's text-tower pass) is not waited for.
    """

    def __init__(self, t: torch.Tensor) -> None:
        self._event = None
        if t.device.type == "cuda":
            self._host = t.detach().to("cpu", non_blocking=True)  # into pinned memory
            self._event = torch.cuda.Event()
            self._event.record(torch.cuda.current_stream(t.device))
        else:
            self._host = t.detach()

    def get(self) -> torch.Tensor:
        """The tensor on the host (waits for the copy on a GPU)."""
        if self._event is not None:
            with blocked("device"):
                self._event.synchronize()
            self._event = None
        return self._host
