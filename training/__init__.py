"""netscope training: datasets, models, training loop and the checkpoint format the server reads."""
