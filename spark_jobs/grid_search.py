"""Job `grid_search` (no Spark): k-fold grid search of train_model's Pipeline (encoding and median fill,
then scikit-learn's RandomForestRegressor) over max_depth x n_estimators on the raw training rows, with
joblib on every core of this machine, in threads of this process. Logs one MLflow parent run (best params,
held-out metrics of the refit best model, heatmap, registered model, held-out rows) and one child run per
grid point (a failed point is a FAILED child run).

Example (bare, outside Airflow; after preprocess_data for the same --run-id):
    python spark_jobs/grid_search.py --dag-id grid_search --run-id manual_1 --work-dir /tmp/work \\
        --max-depth 80,90 --n-estimators 100,200 --cv 3 --tracking-uri http://127.0.0.1:5000
"""

from __future__ import annotations

from mlopsctl_jobs import cli, data, grid, search


def main(argv: list[str] | None = None) -> None:
    parser = cli.base_parser(__doc__.splitlines()[0])
    cli.add_grid_args(parser)
    args = parser.parse_args(argv)

    def body() -> None:
        training = data.training_path(args.work_dir, args.dag_id, args.run_id)
        search.search_and_log(args, lambda: (*data.load_training(training), data.read_rows_dropped(training)),
                              grid.joblib_engine(),
                              lambda X_, y_, pts, cv, rs: grid.run_grid_joblib(X_, y_, pts, cv, rs, n_jobs=-1))

    cli.run_main(body, args.data)


if __name__ == "__main__":
    cli.run_script(main)
