"""Scripts that make or convert data for luna_lra (run as `python -m data_prep.<name>`)."""
