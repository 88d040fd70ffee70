"""prune_compensate: profile and prune the redundant attention of Hugging Face (V)LMs (ELMM §3.4)."""

from .calibration import CalibrationConfig, CalibrationSample, read_samples
from .checkpoint import compensation_spec, load_pruned, read_manifest, replaced_modules, save_pruned
from .compensate import LinearCompensation, replace_module
from .delta import load_delta, save_delta
from .errors import PCError, fail
from .eval import EvalConfig, EvalMetric, EvalResult, evaluate
from .heal import HealConfig, HealReport
from .load import LoadedModel, default_model_path, load_model
from .locate import DecoderLayout, find_decoder
from .profile import LayerProfile, ProfileConfig, ProfileResult, profile
from .progress import progress_bar
from .prune import PruneConfig, PruneResult, prune_

__version__ = "0.1.0"

__all__ = [
    "EvalConfig",
    "EvalMetric",
    "EvalResult",
    "HealConfig",
    "HealReport",
    "LinearCompensation",
    "compensation_spec",
    "evaluate",
    "fail",
    "load_delta",
    "progress_bar",
    "replace_module",
    "replaced_modules",
    "save_delta",
    "CalibrationConfig",
    "CalibrationSample",
    "DecoderLayout",
    "LayerProfile",
    "LoadedModel",
    "PCError",
    "ProfileConfig",
    "ProfileResult",
    "default_model_path",
    "find_decoder",
    "load_model",
    "load_pruned",
    "prune_",
    "PruneConfig",
    "PruneResult",
    "read_manifest",
    "save_pruned",
    "profile",
    "read_samples",
]
