"""MLflow model signatures with the integer columns declared, the others inferred.

``mlflow.models.infer_signature`` warns about every integer input column (a missing value at
inference time would arrive as a float and fail the schema). The models' integer inputs (ids,
counts) are never missing: the features fill them. So they are declared here (``long`` /
``integer``, required, as inference would make them) and only the other columns are inferred.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
from mlflow.models import ModelSignature, infer_signature
from mlflow.types.schema import ColSpec, DataType, Schema


def model_signature(example_input: pd.DataFrame, example_output: Any = None) -> ModelSignature:
    """The signature ``infer_signature(example_input, example_output)`` gives, without its
    integer-column hint."""
    ints = {
        c: DataType.long if example_input[c].dtype.itemsize == 8 else DataType.integer
        for c in example_input.columns
        if pd.api.types.is_integer_dtype(example_input[c])
    }
    rest = example_input.drop(columns=list(ints))
    inferred = {}
    if len(rest.columns):
        inferred = {spec.name: spec for spec in infer_signature(rest).inputs.inputs}
    inputs = Schema(
        [ColSpec(ints[c], c) if c in ints else inferred[c] for c in example_input.columns]
    )
    outputs = infer_signature(example_output).inputs if example_output is not None else None
    return ModelSignature(inputs=inputs, outputs=outputs)
