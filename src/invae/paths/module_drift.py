"""An SDE whose drift is a user's torch module (``invae fit --prior FILE.py:CLASS``;
docs/methods.md §3.16):

    dz = f_θ(z, t) dt + S dW,   z(t_0) ~ N(m, diag s²),

f_θ the module ``CLASS(d)``, its parameters part of θ with S, m and s (:class:`ModuleDrift`),
by Euler–Maruyama on the latent grid as the double well. The module's ``forward(z, t)`` takes z
(…, d) and t, a tensor broadcasting against z's batch (…), and returns the drift (…, d).

θ has no closed-form M-step here: the fit trains it by gradient on the ELBO (methods.md §3.12).
A module that returns another shape, or NaN or inf at z in [−1, 1]^d, is refused when the
prior is built, before any fit.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .sde import LearnedStart, _output  # the built-in SDEs' output convention

__all__ = ["ModuleDrift", "module_sde"]

#: Points where a module's drift is checked: 3 rows spread over [−1, 1] in each coordinate.
_PROBES = 3
#: The names of θ's parameters besides the module's (``parameters_by_name``).
_OWN_NAMES = {"diffusion", "start_mean", "start_scale"}


class ModuleDrift(LearnedStart):
    """``dz = f_θ(z, t) dt + S dW`` with f_θ = ``field``, the module ``field_class(dim)``, and a
    learned Gaussian start (:class:`~invae.paths.sde.LearnedStart`). A subclass per module class
    (:func:`module_sde`) sets ``field_class`` and ``spec``, the name it is registered under."""

    field_class: type[nn.Module]
    spec: str

    def __init__(self, dim: int, diffusion=1.0, start_mean=0.0, start_scale=1.0):
        super().__init__(dim, diffusion, start_mean, start_scale)
        try:
            self.field = self.field_class(dim)
        except TypeError as error:
            raise ValueError(f"the drift module {self.spec} must be built as {self.field_class.__name__}(d): "
                             f"{error}") from None
        self._check_field()
        taken = sorted({name for name, _ in self.field.named_parameters()} & _OWN_NAMES)
        if taken:
            raise ValueError(f"the drift module {self.spec} names a parameter {taken[0]!r}, a name the SDE's own "
                             f"parameters have ({', '.join(sorted(_OWN_NAMES))}) in parameters.json: rename it")

    def drift(self, z: Tensor, t: Tensor | float = 0.0) -> Tensor:
        """``f_θ(z, t)`` for z (…, d); shape (…, d)."""
        return self.field(z, torch.as_tensor(t, dtype=z.dtype, device=z.device))

    def parameters_by_name(self) -> dict[str, Tensor | float]:
        """The module's parameters by their names in it, then S, m and s."""
        own = {name: _output(value) for name, value in self.field.named_parameters()}
        return {**own, "diffusion": _output(self.diffusion()), **self._start_by_name()}

    @torch.no_grad()
    def _check_field(self) -> None:
        """A ``ValueError`` unless the drift at a few z in [−1, 1]^d, t = 0, is finite and of z's shape."""
        z = torch.linspace(-1.0, 1.0, _PROBES * self.dim).reshape(_PROBES, self.dim).to(self.start_mean)
        drift = self.drift(z, 0.0)
        if not isinstance(drift, Tensor) or drift.shape != z.shape:
            shape = tuple(drift.shape) if isinstance(drift, Tensor) else type(drift).__name__
            raise ValueError(f"the drift module {self.spec} returned {shape} for z of shape {tuple(z.shape)}: "
                             "it must return one drift per coordinate, the shape of z (…, d)")
        if not bool(torch.isfinite(drift).all()):
            raise ValueError(f"the drift module {self.spec} returned NaN or inf at z in [-1, 1]^d, t = 0")


def module_sde(spec: str, field_class) -> type[ModuleDrift]:
    """The :class:`ModuleDrift` class of the module class ``field_class``, named ``spec``
    (``FILE.py:CLASS``); a ``ValueError`` where ``field_class`` is not a ``torch.nn.Module`` class."""
    if not (isinstance(field_class, type) and issubclass(field_class, nn.Module)):
        raise ValueError(f"{spec} is not a torch.nn.Module class: a drift is a module whose forward(z, t) "
                         "returns f(z, t) (…, d)")
    return type(f"ModuleDrift[{field_class.__name__}]", (ModuleDrift,), {"field_class": field_class, "spec": spec})
