"""Noticing that a module's tensors changed since a copy of them was taken.

Packed weights and streamers hold copies (another layout, another dtype) of a module's
parameters and thresholds. A copy is valid while every source tensor is

* at the same memory (not replaced by a new ``nn.Parameter`` or buffer, not re-pointed by
  ``.data = ...`` or ``.set_(...)``), and
* at the same version (no in-place write through torch: ``copy_``, ``add_``, optimizer steps,
  ``load_state_dict``).

The watch holds a reference to every source tensor, so their memory cannot be freed and reused
by a new tensor at the same address while the copy exists. Writes that torch itself does not
track are not seen: writing through a NumPy view (``p.detach().numpy()[...] = ...``) or through
``p.data`` (``p.data.copy_(...)``: ``.data`` has a version counter of its own), and, for
inference tensors (created under ``torch.inference_mode()``, which keep no version counter),
in-place writes made inside inference mode.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from operator import attrgetter, getitem

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
        self._pointers = list(map(Tensor.data_ptr, self.tensors))
        versioned = [k for k, t in enumerate(self.tensors) if not t.is_inference()]
        self._all_versioned = len(versioned) == len(self.tensors)
        self._vmaps = [self._maps[k] for k in versioned]
        self._vnames = [self._names[k] for k in versioned]
        self._versions = [_VERSION(self.tensors[k]) for k in versioned]

    def changed(self) -> bool:
        """Whether a source tensor was replaced, re-pointed or written in place (cheap: no data
        is read)."""
        # A streamer calls this at every frame: a few C-level passes, no per-tensor Python.
        # A replaced tensor is told by its memory: the old one is held here, so a new tensor
        # cannot be at its address unless it is a view of the same memory, which holds the same
        # values. The versions are the current tensors', so writes through such a view are
        # seen too (a replacement that is an inference tensor has none: it raises, "changed").
        # Lists, not tuples: tuple(map(...)) grows its guess by a resize, and the resized
        # tuples pile up in CPython's tuple free lists (memory that grows with every frame).
        try:
            current = list(map(getitem, self._maps, self._names))
            if list(map(Tensor.data_ptr, current)) != self._pointers:
                return True
            if not self._all_versioned:
                current = map(getitem, self._vmaps, self._vnames)
            return list(map(_VERSION, current)) != self._versions
        except (KeyError, TypeError, RuntimeError):  # deleted, set to None, no version counter
            return True

    def released(self) -> ReleasedWatch:
        """The same watch once the sources' owner (the module) is gone: the tensors are held
        weakly from then on, so their memory is freed with the last other reference to them.

        Nothing can replace a tensor of a module that no longer exists; a tensor that is still
        alive (an optimizer, a variable or a ``state_dict`` holds it) can still be written in
        place or re-pointed, so it is still watched, until it is freed as well. Call it after
        :meth:`changed` returned False: changes made before are not seen after it.
        """
        return ReleasedWatch(self.tensors)


class ReleasedWatch:
    """:class:`TensorWatch` after :meth:`TensorWatch.released`: the same check on the tensors
    still alive, held by weak references. ``idle`` once none is left (nothing to watch)."""

    def __init__(self, tensors: Sequence[Tensor]) -> None:
        self._entries = [
            (weakref.ref(t), t.data_ptr(), None if t.is_inference() else _VERSION(t))
            for t in tensors
        ]

    @property
    def idle(self) -> bool:
        return not self._entries

    def changed(self) -> bool:
        """Whether a tensor still alive was re-pointed or written in place; the freed ones are
        dropped (no tensor can be written through them)."""
        alive = []
        for ref, pointer, version in self._entries:
            t = ref()
            if t is None:
                continue
            if t.data_ptr() != pointer or (version is not None and _VERSION(t) != version):
                return True
            alive.append((ref, pointer, version))
        self._entries = alive
        return False
