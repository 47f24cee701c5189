"""Batch scoring, one concern a module.

- `model`: the registered version a run scores with, resolved once;
- `arrow_io`: the input's schema, its rows in chunks, and the output file (pyarrow);
- `contract`: the serving contract, from the schema, on a GX sample, and on every chunk;
- `executor`: chunks through the model into the output and the prediction log;
- `steps`: the Prefect tasks the scoring and feedback flows wire.

The names below are the package's public surface, importable from `tasks.scoring`.
"""

from tasks.scoring.arrow_io import OutputWriter, ScoringInput, open_input, read_chunks
from tasks.scoring.contract import GX_SAMPLE_ROWS, ChunkChecks, check_columns, check_input, serving_suite
from tasks.scoring.executor import DEFAULT_CHUNK_ROWS, ScoringSummary, score_chunk, score_file
from tasks.scoring.model import ServingModel, load_serving_model
from tasks.scoring.steps import CheckedInput, record_labels, resolve_model, score_batch, validate_input

__all__ = [
    "DEFAULT_CHUNK_ROWS",
    "GX_SAMPLE_ROWS",
    "CheckedInput",
    "ChunkChecks",
    "OutputWriter",
    "ScoringInput",
    "ScoringSummary",
    "ServingModel",
    "check_columns",
    "check_input",
    "load_serving_model",
    "open_input",
    "read_chunks",
    "record_labels",
    "resolve_model",
    "score_batch",
    "score_chunk",
    "score_file",
    "serving_suite",
    "validate_input",
]
