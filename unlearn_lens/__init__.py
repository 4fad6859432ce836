"""unlearn_lens: audit whether an unlearned language model really forgot, or only hides what it knows."""

from unlearn_lens.data import BUILTIN_DOMAINS, BuiltinSets, DataError, Item, builtin, load_items
from unlearn_lens.diagnostics import Comparison, collect_activations, compare, compare_snapshots, model_fisher
from unlearn_lens.errors import ConfigError, ModelSourceError, UnlearnLensError
from unlearn_lens.evaluation import evaluate, items_correct
from unlearn_lens.localize import (
    DeltaTracker,
    LocalizationSummary,
    ReversionSweep,
    head_attribution,
    logit_lens,
    reversion_sweep,
    summarise_localization,
    weight_deltas,
)
from unlearn_lens.models import (
    BUILTIN_MODELS,
    DEFAULT_MODEL,
    RunOutput,
    Snapshot,
    Subject,
    SubjectInfo,
    load,
    save_checkpoint,
    tiny_gpt2,
    tiny_llama,
    tiny_tokenizer,
    wrap,
)
from unlearn_lens.predict import ReversibilityFeatures, ReversibilityPredictor, builtin_predictor, measure_features
from unlearn_lens.regimes import RegimeThresholds, RegimeVerdict, classify_regime
from unlearn_lens.study.audit import audit
from unlearn_lens.study.config import StudyConfig, load_config
from unlearn_lens.study.results import AuditResults, MethodResults
from unlearn_lens.validation import GridSettings, run_grid
from unlearn_lens.unlearn import (
    ObjectiveConfig,
    RelearnResult,
    TrainConfig,
    TrainingStep,
    UnlearnResult,
    filter_known,
    relearn,
    train,
    unlearn,
)

__version__ = "0.1.0"

__all__ = [
    "AuditResults",
    "BUILTIN_DOMAINS",
    "BUILTIN_MODELS",
    "BuiltinSets",
    "Comparison",
    "ConfigError",
    "DEFAULT_MODEL",
    "DataError",
    "DeltaTracker",
    "GridSettings",
    "Item",
    "LocalizationSummary",
    "MethodResults",
    "ModelSourceError",
    "ObjectiveConfig",
    "RegimeThresholds",
    "RegimeVerdict",
    "RelearnResult",
    "ReversibilityFeatures",
    "ReversibilityPredictor",
    "ReversionSweep",
    "RunOutput",
    "Snapshot",
    "StudyConfig",
    "Subject",
    "SubjectInfo",
    "TrainConfig",
    "TrainingStep",
    "UnlearnLensError",
    "UnlearnResult",
    "__version__",
    "audit",
    "builtin",
    "builtin_predictor",
    "classify_regime",
    "collect_activations",
    "compare",
    "compare_snapshots",
    "evaluate",
    "filter_known",
    "head_attribution",
    "items_correct",
    "load",
    "load_config",
    "load_items",
    "logit_lens",
    "measure_features",
    "model_fisher",
    "relearn",
    "reversion_sweep",
    "run_grid",
    "save_checkpoint",
    "summarise_localization",
    "tiny_gpt2",
    "tiny_llama",
    "tiny_tokenizer",
    "train",
    "unlearn",
    "weight_deltas",
    "wrap",
]
