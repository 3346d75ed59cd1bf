"""Serving pianolab models: an HTTP server with a model registry, per-prediction explanations,
a prediction log with drift monitoring, and shadow / split deployment of a challenger model.

Modules, lowest first: `sniff` (what an upload is), `registry` (run folders behind aliases),
`model` (a run loaded once, predicting files), `words` and `explain` (SHAP reasons in musical words),
`page` (an HTML page per performance), `store` (the SQLite prediction log), `deploy` (who answers),
`drift` and `monitor` (served traffic against the training reference), `live` (champion vs
challenger on feedback), `app` (the FastAPI application).
"""
