"""netscope.jobs: explanation jobs on engines other than netscope's own gRPC
fan-out (netscope.client.jobs). `netscope.jobs.ray` runs a job as a Ray Data
pipeline; it needs the optional extra `netscope[ray]`.

This package runs netscope's server code (the model registry and the Explain
stages) inside the engine's workers, so unlike netscope.client it imports
the server and torch."""
