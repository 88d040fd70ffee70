"""prune_compensate: profile and prune the redundant attention of Hugging Face (V)LMs (ELMM §3.4)."""

from .calibration.sources import CalibrationConfig, CalibrationSample, read_samples
from .checkpoint.delta import load_delta, save_delta
from .checkpoint.format import compensation_spec, read_manifest, replaced_modules
from .checkpoint.reload import load_pruned
from .checkpoint.save import save_pruned
from .errors import PCError, fail
from .eval import EvalConfig, EvalMetric, EvalResult, evaluate
from .export import ExportConfig, ExportResult, export_
from .jobs import (
    LoadConfig,
    PruneJobResult,
    SaveConfig,
    evaluate_model,
    export_model,
    profile_model,
    prune_and_save,
)
from .model.load import LoadedModel, default_model_path, load_model
from .model.locate import DecoderLayout, find_decoder
from .output_dir import atomic_out_dir, clean_stale
from .progress import progress_bar
from .pruning.compensation import LinearCompensation, replace_module
from .pruning.config import PruneConfig
from .pruning.heal import HealConfig, HealReport
from .pruning.profile import LayerProfile, ProfileConfig, ProfileResult, profile
from .pruning.prune import PruneResult, prune_
from .version import __version__ as __version__

__all__ = [
    "LoadConfig",
    "PruneJobResult",
    "SaveConfig",
    "evaluate_model",
    "export_model",
    "ExportConfig",
    "ExportResult",
    "export_",
    "profile_model",
    "prune_and_save",
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
    "atomic_out_dir",
    "clean_stale",
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
