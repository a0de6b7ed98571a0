"""Transactions in a bank's schema: validation of JSON input and a pandas-free feature encoder.

The HTTP API and the streaming scorer receive transactions as JSON objects whose fields are the
feature pipeline's columns: numeric columns take JSON numbers, categorical columns strings, the
time column (if any) Unix seconds or an ISO 8601 string. A column that is not ``required`` may be
``null`` or absent when the pipeline handles missing values (a version-2 pipeline); it is then
encoded exactly as a missing cell in training. An optional id field (``transaction_id`` by
default) is echoed back; any other field (the label, ...) is ignored. Validation is one
pydantic-core pass over the raw bytes, and its errors name the field (and, in a batch, the
transaction's index).

:class:`RecordEncoder` turns validated records into the same matrix as
:meth:`FeaturePipeline.transform_features`; for a plain pipeline (standardised numerics and
one-hot categoricals, nothing missing) without building a DataFrame, which for one transaction
would cost more than the model itself. A test pins the two to the same output.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, NotRequired

import numpy as np
import numpy.typing as npt
import pandas as pd
from pydantic import AllowInfNan, ConfigDict, Strict, StrictInt, StrictStr, TypeAdapter
from pydantic import ValidationError as PydanticValidationError
from pydantic_core import from_json
from typing_extensions import TypedDict

from fraudfl.data import FeaturePipeline

DEFAULT_ID_FIELD = "transaction_id"
# One request may carry up to this many transactions; larger batches go through `fraudfl score`.
MAX_BATCH = 100_000
_SMALL_BATCH = 16
# A batch is validated this many transactions at a time, stopping at the first slice with an
# error: 100k invalid transactions cost one slice's errors, not 100k x fields of them.
VALIDATION_SLICE = 256
# Problems reported per request; the count of the rest is given, not the rest.
MAX_REPORTED_ERRORS = 20

Record = dict[str, Any]
_Number = Annotated[float, Strict(), AllowInfNan(False)]
TransactionId = StrictStr | StrictInt


@dataclass(frozen=True)
class FieldError:
    """One problem with the input: which transaction (batch index), which field, what is wrong."""

    field: str
    message: str
    index: int | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"field": self.field, "message": self.message}
        if self.index is not None:
            out["index"] = self.index
        return out

    def __str__(self) -> str:
        where = f"transaction {self.index}: " if self.index is not None else ""
        return f"{where}field '{self.field}': {self.message}"


class InvalidTransactions(ValueError):
    """The input does not match the bank's schema; ``errors`` name the fields (at most
    MAX_REPORTED_ERRORS; ``more`` counts those left out, within the slice that failed)."""

    def __init__(self, errors: Sequence[FieldError]) -> None:
        self.errors = list(errors[:MAX_REPORTED_ERRORS])
        self.more = max(0, len(errors) - MAX_REPORTED_ERRORS)
        super().__init__("; ".join(str(e) for e in self.errors[:5]))


class BatchTooLarge(ValueError):
    """More transactions than one request may carry."""

    def __init__(self, count: int, limit: int) -> None:
        self.count, self.limit = count, limit
        super().__init__(f"{count} transactions in one request; at most {limit}")


class TransactionValidator:
    """Strict validation of one transaction or a batch (JSON bytes or decoded objects)."""

    def __init__(self, pipeline: FeaturePipeline, id_field: str = DEFAULT_ID_FIELD) -> None:
        self.id_field = id_field
        fields: dict[str, Any] = {col: _Number for col in pipeline.numeric}
        fields.update({col: StrictStr for col in pipeline.categorical})
        if pipeline.time is not None:
            fields[pipeline.time] = StrictStr | _Number
        if not pipeline.is_plain:
            # Missing is data: null or absent, except in required columns.
            fields = {
                col: kind if col in pipeline.required else NotRequired[kind | None]
                for col, kind in fields.items()
            }
        if id_field not in fields:
            fields[id_field] = NotRequired[TransactionId]
        # The fields are only known at run time; pydantic needs typing_extensions' TypedDict on
        # Python 3.11.
        make_typed_dict: Any = TypedDict
        transaction: Any = make_typed_dict("Transaction", fields)
        transaction.__pydantic_config__ = ConfigDict(extra="ignore")
        self._one: TypeAdapter[Record] = TypeAdapter(transaction)
        self._slice: TypeAdapter[list[Record]] = TypeAdapter(list[transaction])

    def json_schema(self) -> dict[str, Any]:
        """OpenAPI schema of the request body: one transaction or a list of them."""
        one = self._one.json_schema()
        return {"oneOf": [one, {"type": "array", "items": one, "minItems": 1,
                                "maxItems": MAX_BATCH}]}

    def validate_json(
        self, body: bytes, max_batch: int = MAX_BATCH
    ) -> tuple[list[Record], bool]:
        """Records and whether the input was a batch (a JSON array); raises
        :class:`InvalidTransactions` or :class:`BatchTooLarge`."""
        if body.lstrip()[:1] != b"[":
            try:
                return [self._one.validate_json(body)], False
            except PydanticValidationError as exc:
                raise InvalidTransactions(_field_errors(exc, is_batch=False)) from None
        try:
            items = from_json(body)
        except ValueError as exc:
            raise InvalidTransactions(
                [FieldError("(body)", f"invalid JSON: {exc}")]
            ) from None
        if not items:
            raise InvalidTransactions([FieldError("(body)", "an empty batch")])
        if len(items) > min(max_batch, MAX_BATCH):
            raise BatchTooLarge(len(items), min(max_batch, MAX_BATCH))
        records: list[Record] = []
        for start in range(0, len(items), VALIDATION_SLICE):
            try:
                records += self._slice.validate_python(items[start : start + VALIDATION_SLICE])
            except PydanticValidationError as exc:
                raise InvalidTransactions(_field_errors(exc, True, offset=start)) from None
        return records, True

    def validate_one(self, data: bytes | Mapping[str, Any]) -> Record:
        """One transaction from JSON bytes or an already decoded object."""
        try:
            if isinstance(data, bytes | bytearray):
                return self._one.validate_json(data)
            return self._one.validate_python(data)
        except PydanticValidationError as exc:
            raise InvalidTransactions(_field_errors(exc, is_batch=False)) from None


def _field_errors(
    exc: PydanticValidationError, is_batch: bool, offset: int = 0
) -> list[FieldError]:
    out: list[FieldError] = []
    for err in exc.errors(include_url=False, include_input=False):
        loc = list(err["loc"])
        index: int | None = None
        if is_batch and loc and isinstance(loc[0], int):
            index = offset + int(loc.pop(0))
        # A union's alternatives appear as extra path parts ("transaction_id", "str"): the first
        # part is the field the user wrote.
        field = str(loc[0]) if loc else "(body)"
        message = str(err["msg"])
        if err["type"] == "json_invalid":
            field, message = "(body)", f"invalid JSON: {err.get('ctx', {}).get('error', message)}"
        out.append(FieldError(field=field, message=message, index=index))
    # Union alternatives repeat the same field; report each field of a transaction once.
    unique: dict[tuple[int | None, str], FieldError] = {}
    for e in out:
        unique.setdefault((e.index, e.field), e)
    return list(unique.values())


class RecordEncoder:
    """Feature matrix of validated records, equal to ``pipeline.transform_features``."""

    def __init__(self, pipeline: FeaturePipeline) -> None:
        self.pipeline = pipeline
        self.numeric = list(pipeline.numeric)
        self.means = np.asarray(pipeline.means, dtype=np.float64)
        self.stds = np.asarray(pipeline.stds, dtype=np.float64)
        self.num_features = pipeline.num_features
        self._scale = [(float(m), float(s)) for m, s in zip(self.means, self.stds, strict=True)]
        self.categorical: list[tuple[str, dict[str, int]]] = []
        offset = len(self.numeric)
        for col in pipeline.categorical if pipeline.is_plain else ():
            vocab = pipeline.vocabularies[col]
            self.categorical.append((col, {v: offset + i for i, v in enumerate(vocab)}))
            offset += len(vocab)

    def encode(self, records: Sequence[Mapping[str, Any]]) -> npt.NDArray[np.float32]:
        n = len(records)
        if not self.pipeline.is_plain:
            # Missing values, quantile knots, hashing and time features: the pipeline itself,
            # so that scoring encodes exactly as training did.
            frame = pd.DataFrame(
                {col: pd.Series([r.get(col) for r in records], dtype=object)
                 for col in self.pipeline.inputs}
            )
            return self.pipeline.transform_features(frame, source="input")
        if n <= _SMALL_BATCH:
            return self._encode_rows(records)
        out = np.zeros((n, self.num_features), dtype=np.float64)
        for i, col in enumerate(self.numeric):
            values = np.fromiter((r[col] for r in records), dtype=np.float64, count=n)
            out[:, i] = (values - self.means[i]) / self.stds[i]
        for col, index in self.categorical:
            # A category outside the vocabulary encodes as all zeros, as in the pipeline.
            positions = [index.get(r[col], -1) for r in records]
            pos = np.fromiter(positions, dtype=np.int64, count=n)
            known = pos >= 0
            out[np.flatnonzero(known), pos[known]] = 1.0
        return out.astype(np.float32)

    def _encode_rows(self, records: Sequence[Mapping[str, Any]]) -> npt.NDArray[np.float32]:
        # Plain Python per row: for a handful of records, a dozen small NumPy calls per column
        # would cost more than the model.
        rows = []
        for r in records:
            row = [0.0] * self.num_features
            for i, (col, (mean, std)) in enumerate(zip(self.numeric, self._scale, strict=True)):
                row[i] = (r[col] - mean) / std
            for col, index in self.categorical:
                pos = index.get(r[col])
                if pos is not None:
                    row[pos] = 1.0
            rows.append(row)
        return np.array(rows, dtype=np.float32).reshape(len(records), self.num_features)
