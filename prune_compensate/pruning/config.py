"""``PruneConfig``: what ``prune_`` does, validated when it is built (before any model is loaded)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..calibration.sources import CalibrationConfig
from ..errors import PCError
from .heal import HealConfig
from .placement import PlacementConfig
from .profile import ProfileResult

INITS = ("lstsq", "mean", "zero", "none", "merged")
ORDERS = ("bottom-up", "independent")
TARGETS = ("downstream", "local")


@dataclass
class PruneConfig(PlacementConfig):
    """How to prune. ``layers`` overrides the ranking; ``profile`` reuses a saved ranking. The
    placement fields (``k``, ``decoder``, ``stack``, ``unit``) are ``PlacementConfig``'s.

    ``ridge``: λ relative to ``trace(XᵀX)/D`` for ``lstsq``. ``rank``: low-rank W (truncated SVD).
    ``held_out``: share of calibration samples kept out of fitting for the error report.
    ``compare``: inits whose held-out error is reported beside the chosen one. ``none`` and
    ``zero`` cost no fit; ``mean`` and ``lstsq`` each cost another full fit (one pass over the
    fitting samples per pruned layer, bottom-up), so the default compares with ``none`` only.
    ``target``: what each fit regresses on. ``"local"``: the core's own output with the layers
    below already replaced (the error the drop causes at this layer). ``"downstream"`` (default):
    the paper's ε = x_ori − x_pruning taken literally — the *original* model's core output plus
    the drift of the residual stream the earlier replacements left (original − pruned residual,
    mapped back through the block's affine output map when it has one), so each fit also undoes
    the error accumulated below it. The two coincide for ``order="independent"``.
    With ``unit="block"`` each dropped block is replaced by ``x + map(x)``, fitted to the block's
    residual update with the same inits, order, targets and heal.
    """

    layers: list[int] | None = None
    init: str = "lstsq"
    order: str = "bottom-up"
    ridge: float = 1e-4
    bias: bool = True
    rank: int | None = None
    held_out: float = 0.2
    compare: tuple[str, ...] = ("none",)
    max_positions: int = 4096
    target: str = "downstream"
    profile: ProfileResult | None = None
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    heal: HealConfig = field(default_factory=HealConfig)
    show_progress: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.stack == "both" and (self.layers is not None or self.decoder is not None or self.profile is not None):
            raise PCError(
                "--layers, --decoder and --profile name units of one stack, not of both",
                "use --k with --stack both, or --stack encoder|decoder with them",
            )
        if self.init not in INITS:
            raise PCError(f"unknown --init {self.init!r}", f"use one of {', '.join(INITS)}")
        if self.order not in ORDERS:
            raise PCError(f"unknown --order {self.order!r}", f"use one of {', '.join(ORDERS)}")
        if not 0.0 <= self.held_out < 1.0:
            raise PCError(f"held-out share must be in [0, 1), got {self.held_out}", "pass e.g. --held-out 0.2")
        if self.rank is not None and self.rank < 1:
            raise PCError(f"--rank must be at least 1, got {self.rank}", "pass a positive rank or leave it out")
        if self.ridge < 0:
            raise PCError(f"--ridge must be non-negative, got {self.ridge}", "pass e.g. --ridge 1e-4")
        if self.target not in TARGETS:
            raise PCError(f"unknown target {self.target!r}", f"use one of {', '.join(TARGETS)}")
        for name in self.compare:
            if name not in INITS:
                raise PCError(f"unknown init {name!r} to compare", f"use names from {', '.join(INITS)}")
        if "merged" in (self.init, *self.compare):
            self._check_merged()

    def _check_merged(self) -> None:
        """What ``--init merged`` (``merged.py``) cannot do, refused before any model is loaded."""
        if self.unit == "block":
            raise PCError(
                "--init merged folds an attention's map into an MLP; a whole block has none", "use --unit attention"
            )
        if self.rank is not None:
            raise PCError("--init merged folds a full map into the MLP projection; --rank has no use", "drop --rank")
        if self.init == "merged" and self.heal.steps > 0:
            raise PCError(
                "the heal trains maps, and a merged map is folded into an MLP", "drop --heal-steps, or use --init lstsq"
            )
        if self.layers is not None and 0 in self.layers:
            raise PCError("--init merged needs an MLP below the layer; layer 0 has none", "name layers from 1 up")
