"""ml_linear: skl2onnx's linear models (ai.onnx.ml LinearClassifier, LinearRegressor) put their product on
crossbars, and what the operator does after it stays onnxruntime's: labels, probabilities and scores
as onnxruntime gives them, whatever the classes, their type and the post_transform."""

import numpy as np
import pytest

from helpers import compiled, ort_outputs, simulate

skl2onnx = pytest.importorskip("skl2onnx")
linear_model = pytest.importorskip("sklearn.linear_model")
svm = pytest.importorskip("sklearn.svm")


def _data(classes: int, features: int = 6, rows: int = 40):
    rng = np.random.default_rng(classes)
    x = rng.normal(size=(rows, features)).astype(np.float32)
    y = (x @ rng.normal(size=(features, classes))).argmax(axis=1)
    return x, y


def _onnx(estimator, x, options):
    from skl2onnx.common.data_types import FloatTensorType
    return skl2onnx.convert_sklearn(estimator, initial_types=[("X", FloatTensorType([None, x.shape[1]]))],
                                    target_opset={"": 17, "ai.onnx.ml": 3}, options=options)


CASES = {
    "logistic_binary": lambda x, y: linear_model.LogisticRegression().fit(x, y % 2),
    "logistic_3_classes": lambda x, y: linear_model.LogisticRegression().fit(x, y),
    "logistic_string_classes": lambda x, y: linear_model.LogisticRegression().fit(x, np.array(["a", "b", "c"])[y]),
    "linear_svc": lambda x, y: svm.LinearSVC().fit(x, y),
    "linear_regression": lambda x, y: linear_model.LinearRegression().fit(x, x @ np.arange(6.0)),
    "ridge_two_targets": lambda x, y: linear_model.Ridge().fit(x, np.stack([x.sum(1), x[:, 0]], 1)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_linear_model_of_ai_onnx_ml_maps_and_answers_as_onnxruntime(case):
    x, y = _data(3)
    estimator = CASES[case](x, y)
    options = {id(estimator): {"zipmap": False}} if hasattr(estimator, "predict_proba") else None
    model = _onnx(estimator, x, options)
    c = compiled(model, batch=8)
    assert len(c.mapping.layers) == 1
    (layer,) = c.mapping.layers
    assert layer.matrices[0].k_in == 6
    feeds = {"X": x[:8]}
    for got, want in zip(simulate(c, feeds), ort_outputs(model, feeds)):
        got = np.asarray(got)
        if want.dtype.kind in "OUS" or want.dtype.kind == "i":
            assert got.astype(want.dtype).tolist() == want.tolist()     # labels: exactly onnxruntime's
        else:
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
