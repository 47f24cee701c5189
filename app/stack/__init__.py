"""The local stack: a Prefect server, an MLflow server and a worker, started and stopped by pid.

`config` (settings, ports, databases), `state` (.conveyor/stack.json), `processes` (spawn, inspect,
stop), `services` (each service's command line and environment), `postgres` (the PostgreSQL
profile's databases), `health` (is each service ready), `deploy` and `deploy_stamp` (the
deployments), `startup` (up, down, status).
"""
