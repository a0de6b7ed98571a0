"""Missing values are data: loaded, counted, imputed and flagged alike in training and scoring."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fraudfl.data import FeaturePipeline, Schema, compute_stats, load_dataset, sum_stats
from fraudfl.data.pipeline import MISSING_SLOT
from fraudfl.data.sketch import quantile
from fraudfl.errors import FraudflError
from fraudfl.models import ModelSpec, get_flat_params, set_flat_params
from fraudfl.scoring import Scorer, build_artifact, load_artifact, save_artifact
from fraudfl.scoring.batch import score_file
from fraudfl.training import TrainConfig, train_local

KEY = "00112233445566778899aabbccddeeff"
SCHEMA_TOML = f"""\
label = "y"
numeric = ["amount", "count", "score", "never_missing"]
categorical = ["channel", "merchant"]
drop = ["id"]
time = "ts"
missing_values = ["-999", "n/a"]
required = ["never_missing"]
hash_key = "{KEY}"

[transforms]
"amount" = "quantile"
"count" = "log"

[impute]
"score" = "median"

[hashed]
"merchant" = 16

[categories]
"channel" = ["pos", "web"]
"""


def bank_csv(rng: np.random.Generator, n: int, start_id: int, *, gaps: bool) -> str:
    """Rows with gaps in every feature column type (if ``gaps``), written as a bank would."""
    lines = ["id,amount,count,score,never_missing,channel,merchant,ts,y"]
    for i in range(n):
        y = int(rng.random() < 0.2)
        amount = f"{rng.lognormal(3 + y, 1):.2f}"
        count = str(int(rng.poisson(2 + 3 * y)))
        score = f"{rng.normal(y, 1):.3f}"
        channel = rng.choice(["pos", "web"])
        merchant = f"m{int(rng.integers(0, 40)) if not y else int(rng.integers(0, 3))}"
        ts = f"2026-01-{1 + i % 28:02d}T{int(rng.integers(0, 24)):02d}:00:00"
        if gaps:
            # Informative: frauds miss 'score' more often.
            amount = "-999" if rng.random() < 0.1 else amount
            count = "" if rng.random() < 0.1 else count
            score = "n/a" if rng.random() < (0.5 if y else 0.05) else score
            channel = "" if rng.random() < 0.1 else channel
            merchant = "" if rng.random() < 0.1 else merchant
            ts = "" if rng.random() < 0.05 else ts
        lines.append(
            f"{start_id + i},{amount},{count},{score},{rng.normal():.3f},{channel},{merchant},"
            f"{ts},{y}"
        )
    return "\n".join(lines) + "\n"


@pytest.fixture
def messy_dir(tmp_path: Path) -> Path:
    rng = np.random.default_rng(5)
    (tmp_path / "schema.toml").write_text(SCHEMA_TOML)
    (tmp_path / "bank_a.csv").write_text(bank_csv(rng, 300, 0, gaps=True))
    (tmp_path / "bank_b.csv").write_text(bank_csv(rng, 200, 1000, gaps=False))
    (tmp_path / "test.csv").write_text(bank_csv(rng, 100, 2000, gaps=True))
    return tmp_path


def fitted(messy_dir: Path) -> tuple[Schema, dict[str, pd.DataFrame], FeaturePipeline]:
    ds = load_dataset(messy_dir)
    stats = sum_stats(compute_stats(frame, ds.schema) for frame in ds.banks.values())
    return ds.schema, ds.banks, FeaturePipeline.fit(stats)


def test_loaded_frames_hold_missing_values_of_every_column_type(messy_dir: Path) -> None:
    ds = load_dataset(messy_dir)
    a = ds.banks["bank_a"]
    for col in ("amount", "count", "score", "channel", "merchant", "ts"):
        assert 0 < a[col].isna().sum() < len(a), col
    assert not ds.banks["bank_b"].drop(columns="y").isna().any().any()
    # The markers became missing, not values.
    assert (a["amount"].dropna() > 0).all()
    assert ds.schema.categories == {"channel": ["pos", "web"]}


def test_stats_count_missing_values_and_moments_of_present_values(messy_dir: Path) -> None:
    schema, banks, _ = fitted(messy_dir)
    a = banks["bank_a"]
    stats = compute_stats(a, schema)
    for col in schema.features:
        assert stats.missing(col) == int(a[col].isna().sum()), col
    i = schema.numeric.index("count")
    present = a["count"].dropna().to_numpy()
    np.testing.assert_allclose(stats.sums[i], np.log1p(present).sum())
    assert stats.histogram("amount").sum() == len(a["amount"].dropna())


def test_indicators_only_where_some_bank_has_missing_values(messy_dir: Path) -> None:
    schema, banks, pipeline = fitted(messy_dir)
    assert pipeline.indicators == ["amount", "count", "score", "channel", "merchant", "ts"]
    assert "never_missing:missing" not in pipeline.feature_names
    assert f"channel={MISSING_SLOT}" in pipeline.feature_names
    assert {"merchant:missing", "ts:missing", "amount:missing"} <= set(pipeline.feature_names)
    # Bank b alone has no gaps: fitted on its statistics, no indicator at all.
    alone = FeaturePipeline.fit(compute_stats(banks["bank_b"], schema))
    assert alone.indicators == []
    assert not any(name.endswith(":missing") for name in alone.feature_names)
    # ...and a missing value met later (scoring) is imputed, not an error.
    row = banks["bank_a"][banks["bank_a"]["score"].isna()].head(1)
    features = alone.transform_features(row)
    assert np.isfinite(features).all()


def test_imputation_from_summed_statistics(messy_dir: Path) -> None:
    schema, banks, pipeline = fitted(messy_dir)
    pooled = pd.concat(list(banks.values()), ignore_index=True)
    assert pipeline.fills is not None
    i = schema.numeric.index("never_missing")
    np.testing.assert_allclose(pipeline.fills[i], pooled["never_missing"].mean(), rtol=1e-12)
    # Median imputation from the summed sketch equals the pooled sketch's median.
    stats = sum_stats(compute_stats(f, schema) for f in banks.values())
    pooled_stats = compute_stats(pooled, schema)
    j = schema.numeric.index("score")
    assert pipeline.fills[j] == quantile(pooled_stats.histogram("score"), 0.5)
    assert pipeline.fills[j] == quantile(stats.histogram("score"), 0.5)
    # A missing value encodes as its fill value plus the indicator.
    a = banks["bank_a"]
    gap = a[a["score"].isna()].head(1)
    filled = gap.assign(score=pipeline.fills[j])
    x_gap, x_filled = pipeline.transform_features(gap), pipeline.transform_features(filled)
    flag = pipeline.feature_names.index("score:missing")
    assert x_gap[0, flag] == 1.0 and x_filled[0, flag] == 0.0
    assert x_gap[0, j] == x_filled[0, j]


def test_required_column_and_label_may_not_be_missing(messy_dir: Path) -> None:
    text = (messy_dir / "bank_b.csv").read_text().splitlines()
    cells = text[3].split(",")
    cells[4] = ""  # never_missing, row 3
    text[3] = ",".join(cells)
    (messy_dir / "bank_b.csv").write_text("\n".join(text) + "\n")
    with pytest.raises(FraudflError) as info:
        load_dataset(messy_dir)
    msg = str(info.value)
    assert "bank_b.csv: row 3, column 'never_missing': missing value in a required" in msg
    cells[4], cells[-1] = "0.5", ""
    text[3] = ",".join(cells)
    (messy_dir / "bank_b.csv").write_text("\n".join(text) + "\n")
    with pytest.raises(FraudflError, match=r"bank_b.csv: row 3, column 'y': empty label"):
        load_dataset(messy_dir)


def test_bad_values_still_name_file_column_and_row(messy_dir: Path) -> None:
    for col_index, bad, column in ((1, "12.x", "amount"), (7, "yesterday", "ts")):
        text = (messy_dir / "bank_b.csv").read_text().splitlines()
        cells = text[5].split(",")
        original = cells[col_index]
        cells[col_index] = bad
        text[5] = ",".join(cells)
        (messy_dir / "bank_b.csv").write_text("\n".join(text) + "\n")
        with pytest.raises(FraudflError) as info:
            load_dataset(messy_dir)
        assert f"bank_b.csv: row 5, column '{column}'" in str(info.value)
        assert repr(bad) in str(info.value)
        cells[col_index] = original
        text[5] = ",".join(cells)
        (messy_dir / "bank_b.csv").write_text("\n".join(text) + "\n")


def test_train_and_score_encode_missing_values_identically(
    messy_dir: Path, tmp_path: Path
) -> None:
    _schema, banks, pipeline = fitted(messy_dir)
    X, y = pipeline.transform(pd.concat(list(banks.values()), ignore_index=True))
    assert np.isfinite(X).all()
    spec = ModelSpec("mlp", pipeline.num_features, 2, hidden=(8,))
    model = spec.build(seed=0)
    result = train_local(model, get_flat_params(model), X, y,
                         TrainConfig(local_epochs=2, batch_size=32, lr=0.1),
                         rng=np.random.default_rng(0))
    set_flat_params(model, result.params)
    ds = load_dataset(messy_dir)
    assert ds.test is not None
    X_test, y_test = pipeline.transform(ds.test)
    artifact = build_artifact(model, spec, pipeline, X_test, y_test, target_fpr=0.05,
                              version=1, round=1)
    save_artifact(artifact, tmp_path / "model")
    scorer = Scorer(load_artifact(tmp_path / "model"))
    # The artifact's pipeline went through JSON: same features as in training.
    np.testing.assert_array_equal(scorer.artifact.pipeline.transform_features(ds.test), X_test)
    expected = scorer.score_features(X_test).probabilities

    # Raw test rows as JSON transactions: gaps as null, absent fields or the text markers.
    raw = pd.read_csv(messy_dir / "test.csv", dtype=str, keep_default_na=False)
    records = []
    for i, row in enumerate(raw.to_dict(orient="records")):
        rec: dict[str, object] = {"transaction_id": i}
        for col in pipeline.numeric:
            cell = row[col]
            if cell == "":
                if i % 2:
                    rec[col] = None
            else:
                rec[col] = cell if cell in ("-999", "n/a") else float(cell)
        for col in pipeline.categorical:
            rec[col] = row[col] or None
        rec["ts"] = row["ts"] or None
        records.append(rec)
    # A marker sent as text in a numeric field is not a JSON number: send those as null.
    body = json.dumps([
        {k: (None if v in ("-999", "n/a") else v) for k, v in r.items()} for r in records
    ]).encode()
    validated, is_batch = scorer.validator.validate_json(body)
    assert is_batch
    np.testing.assert_allclose(scorer.score_records(validated).probabilities, expected,
                               rtol=1e-6)
    # The batch scorer reads the raw file, markers included.
    summary = score_file(scorer, messy_dir / "test.csv", tmp_path / "scored.csv")
    assert summary.rows == len(y_test)
    scored = pd.read_csv(tmp_path / "scored.csv")
    np.testing.assert_allclose(scored["fraud_probability"], expected, rtol=1e-6)


def test_pipeline_json_round_trip_with_every_encoding(messy_dir: Path) -> None:
    _, banks, pipeline = fitted(messy_dir)
    back = FeaturePipeline.from_dict(json.loads(json.dumps(pipeline.to_dict())))
    assert back.feature_names == pipeline.feature_names
    frame = banks["bank_a"]
    np.testing.assert_array_equal(back.transform_features(frame),
                                  pipeline.transform_features(frame))
    data = pipeline.to_dict()
    data["numeric"][0]["knots"]["cdf"] = [0.5, 0.2]
    with pytest.raises(FraudflError, match="knots"):
        FeaturePipeline.from_dict(data)
    data = pipeline.to_dict()
    data["hash_key"] = None
    with pytest.raises(FraudflError, match="hash_key"):
        FeaturePipeline.from_dict(data)


def test_version_1_pipelines_still_load() -> None:
    v1 = {"format": "fraudfl.feature_pipeline", "version": 1, "label": "y", "task": "binary",
          "num_classes": 2, "numeric": [{"name": "a", "mean": 1.0, "std": 2.0}],
          "categorical": [{"name": "c", "categories": ["p", "q"]}]}
    pipeline = FeaturePipeline.from_dict(v1)
    assert pipeline.is_plain
    x = pipeline.transform_features(pd.DataFrame({"a": [3.0], "c": ["q"]}))
    assert x.tolist() == [[1.0, 0.0, 1.0]]


def test_schema_toml_round_trip_keeps_every_encoding(messy_dir: Path) -> None:
    ds = load_dataset(messy_dir)
    from fraudfl.data import load_schema, write_schema

    out = messy_dir / "again"
    out.mkdir()
    write_schema(ds.schema, out)
    assert load_schema(out / "schema.toml") == ds.schema
    with pytest.raises(FraudflError, match="hash_key"):
        replace(ds.schema, hash_key=None)
    with pytest.raises(FraudflError, match="required column 'nope'"):
        replace(ds.schema, required=["nope"])
