"""Reading NPZ files without pickle."""
