"""Noticing that a module's tensors changed since a copy of them was taken.

Packed weights and streamers hold copies (another layout, another dtype) of a module's
parameters and thresholds. A copy is valid while every source tensor is

* the same object in the module (not replaced by a new ``nn.Parameter`` or buffer),
* pointing at the same memory (not re-pointed by ``.data = ...`` or ``.set_(...)``), and
* at the same version (no in-place write through torch: ``copy_``, ``add_``, optimizer steps,
  ``load_state_dict``).

The watch holds a reference to every source tensor, so their memory cannot be freed and reused
by a new tensor at the same address while the copy exists. Writes that torch itself does not
track are not seen: writing through a NumPy view (``p.detach().numpy()[...] = ...``), and, for
inference tensors (created under ``torch.inference_mode()``, which keep no version counter),
in-place writes made inside inference mode.
"""

from __future__ import annotations

from collections.abc import Sequence
from operator import attrgetter, eq, getitem, is_

from torch import Tensor

_VERSION = attrgetter("_version")


class TensorWatch:
    """Tells whether any of the named tensors of some modules changed since construction.

    Args:
        sources: ``(mapping, name)`` pairs, e.g. ``(module._parameters, "weight_ih_l0")``; the
            current tensor is ``mapping[name]``.
    """

    def __init__(self, sources: Sequence[tuple[dict, str]]) -> None:
        self._maps = [m for m, _ in sources]
        self._names = [n for _, n in sources]
        self.tensors: tuple[Tensor, ...] = tuple(map(getitem, self._maps, self._names))
        self._pointers = tuple(map(Tensor.data_ptr, self.tensors))
        self._versioned = [t for t in self.tensors if not t.is_inference()]
        self._versions = tuple(map(_VERSION, self._versioned))

    def changed(self) -> bool:
        """Whether a source tensor was replaced, re-pointed or written in place (cheap: no data
        is read)."""
        # Built of map() and all() without intermediate tuples: a streamer calls this at every
        # frame, and it must neither allocate per call nor cost more than a few hundred ns.
        try:
            return not (
                all(map(is_, map(getitem, self._maps, self._names), self.tensors))
                and all(map(eq, map(Tensor.data_ptr, self.tensors), self._pointers))
                and all(map(eq, map(_VERSION, self._versioned), self._versions))
            )
        except (KeyError, TypeError):  # a source was deleted or set to None
            return True
