"""A BentoML service serving the iris classifier that serve_models.py writes, for
verdict-serve's integration tests (scripts/models/integration).

  VERDICT_BENTOML_MODEL=DIR/model.joblib bentoml serve bentoml_service:Iris --port P

POST /predict {"features": [[5.1, 3.5, 1.4, 0.2], ...]} -> [0, ...]. The optional
`sleep_ms` parameter makes the model slow on purpose (the timeout case); rows of the wrong
width make scikit-learn raise (the model-error case).
"""
import os
import time

import bentoml
import numpy as np


@bentoml.service(workers=1, traffic={"timeout": 60})
class Iris:
    def __init__(self) -> None:
        import joblib

        self.model = joblib.load(os.environ["VERDICT_BENTOML_MODEL"])

    @bentoml.api
    def predict(self, features: list[list[float]], sleep_ms: float = 0.0) -> list[int]:
        if sleep_ms > 0:
            time.sleep(sleep_ms / 1000.0)
        return self.model.predict(np.asarray(features)).tolist()
