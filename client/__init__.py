"""netscope client: typed Python client, the `netscope` command and benchmarks."""
