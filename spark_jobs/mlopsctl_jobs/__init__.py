"""mlopsctl_jobs: the code the Spark jobs of spark_jobs/ share, one module per concern.

* `data`: reading and validating the source data, the typed training table;
* `model`: the model (a Pipeline of encoding, median fill and the random forest) and its metrics;
* `grid`: the grid search's fits, on joblib threads or Spark's Python workers;
* `search`: the body the two grid-search jobs share;
* `tracking`: MLflow runs, models and the registry;
* `session`: the SparkSession, and shipping this package to its workers;
* `installed`: the installed jobs' wheel, checked against the version a task expects;
* `cli`: the jobs' argv and exit codes.

It ships as the jobs' wheel (distribution ``mlopsctl-jobs``), which Databricks tasks install, and as a zip a
local session adds to its workers. Nothing here imports Airflow or mlopsctl; heavy libraries (pyspark, pandas,
scikit-learn, MLflow, matplotlib) are imported inside the functions that need them.
"""
