"""Option files: strict YAML, typed schema, overrides, resolved-config saving."""
from hidiff.config.load import (apply_overrides, config_diff, config_hash, key_differences, load_options,
                                options_from_text, resolved_yaml, save_resolved)
from hidiff.config.schema import (AmpOptions, Block, DatasetOptions, DiffusionOptions, LoggerOptions, Options,
                                  PathOptions, TrainOptions, ValOptions)

__all__ = ["load_options", "options_from_text", "apply_overrides", "config_hash", "config_diff", "key_differences",
           "save_resolved",
           "resolved_yaml", "Options", "Block", "DatasetOptions", "DiffusionOptions", "PathOptions",
           "TrainOptions", "ValOptions", "LoggerOptions", "AmpOptions"]
