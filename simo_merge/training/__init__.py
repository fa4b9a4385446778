"""Training and evaluation of SIMO models: losses, the one-pass multi-task model, the fit loop."""
