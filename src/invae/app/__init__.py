"""The application layer: the ``invae`` command line, its settings, the fit and predict
pipelines, model files, reading and writing results, the demo and the report."""
